//! Conversions between `google.protobuf.Struct` and JSON, which prost-types does not
//! provide. JSON has no NaN or infinities, so those are refused rather than mangled.

use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};

/// Why a `Struct` cannot be represented as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonFiniteNumber {
    /// Dotted path of the offending value, e.g. `"a.b[2]"`.
    pub path: String,
}

/// Converts a `Struct` to a JSON object.
pub fn struct_to_json(value: &Struct) -> Result<Map<String, Json>, NonFiniteNumber> {
    let mut path = String::new();
    fields_to_json(value, &mut path)
}

fn fields_to_json(value: &Struct, path: &mut String) -> Result<Map<String, Json>, NonFiniteNumber> {
    let mut out = Map::with_capacity(value.fields.len());
    for (key, field) in &value.fields {
        let restore = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        out.insert(key.clone(), value_to_json(field, path)?);
        path.truncate(restore);
    }
    Ok(out)
}

fn value_to_json(value: &Value, path: &mut String) -> Result<Json, NonFiniteNumber> {
    Ok(match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::NumberValue(n)) => {
            number_to_json(*n).ok_or_else(|| NonFiniteNumber { path: path.clone() })?
        }
        Some(Kind::StructValue(s)) => Json::Object(fields_to_json(s, path)?),
        Some(Kind::ListValue(list)) => {
            let mut items = Vec::with_capacity(list.values.len());
            for (index, item) in list.values.iter().enumerate() {
                let restore = path.len();
                path.push_str(&format!("[{index}]"));
                items.push(value_to_json(item, path)?);
                path.truncate(restore);
            }
            Json::Array(items)
        }
    })
}

/// Integral values within a double's exact range become JSON integers (`3`, not
/// `3.0`), as JSON clients wrote them; others stay floats; NaN and infinities fail.
fn number_to_json(n: f64) -> Option<Json> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.is_finite() && n.fract() == 0.0 && n.abs() <= EXACT {
        #[allow(clippy::cast_possible_truncation)] // integral and within 2^53
        return Some(Json::from(n as i64));
    }
    Number::from_f64(n).map(Json::Number)
}

/// Converts a JSON object to a `Struct`.
pub fn json_to_struct(map: &Map<String, Json>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(key, value)| (key.clone(), json_to_value(value)))
            .collect(),
    }
}

/// Converts any JSON value to a `google.protobuf.Value`.
pub fn json_to_value(value: &Json) -> Value {
    let kind = match value {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        // protobuf numbers are doubles; integers beyond 2^53 lose precision, as in
        // every JSON mapping of protobuf
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_nested_values() {
        let json = serde_json::json!({"a": {"b": [1.5, "x", null, true, {"c": []}]}, "n": 3});
        let Json::Object(map) = json else {
            unreachable!()
        };
        let back = struct_to_json(&json_to_struct(&map)).map(Json::Object);
        assert_eq!(back, Ok(Json::Object(map)));
    }

    #[test]
    fn refuses_non_finite_numbers_with_their_path() {
        let inner = Struct {
            fields: [(
                "x".to_string(),
                Value {
                    kind: Some(Kind::ListValue(ListValue {
                        values: vec![Value {
                            kind: Some(Kind::NumberValue(f64::NAN)),
                        }],
                    })),
                },
            )]
            .into(),
        };
        let outer = Struct {
            fields: [(
                "a".to_string(),
                Value {
                    kind: Some(Kind::StructValue(inner)),
                },
            )]
            .into(),
        };
        assert_eq!(
            struct_to_json(&outer),
            Err(NonFiniteNumber {
                path: "a.x[0]".into()
            })
        );
    }
}
