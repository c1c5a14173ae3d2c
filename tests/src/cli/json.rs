//! The JSON `jct` reads and writes. Reading: a task in the V1 JSON shape that
//! existing clients send (field names of contract-v1, also in protobuf's
//! lowerCamelCase JSON spelling as grpcurl users write them, with the deprecated
//! aliases `type`, `payload` and `target.repository` passed through for the intake
//! to resolve as it does for every client). Writing: the stable output of
//! `-o json` (documented in the README, "The jct CLI").

use jct::structs::json_to_struct;
use jct::v1 as pb;
use prost_types::Struct;
use serde_json::{Map, Value as Json, json};

// ---------------------------------------------------------------- reading

/// An `EnqueueRequest` from a V1 JSON task. Unknown fields are refused (a typo
/// must not silently drop a field); `null` means absent.
// the deprecated aliases are carried as sent: the intake resolves them
#[allow(deprecated)]
pub fn enqueue_from_json(value: &Json) -> Result<pb::EnqueueRequest, String> {
    let mut fields = Fields::of(value, "")?;
    let request = pb::EnqueueRequest {
        version: fields.string(&["version"])?.unwrap_or_default(),
        idempotency_key: fields.string(&["idempotency_key", "idempotencyKey"])?,
        requested_by: fields
            .object(&["requested_by", "requestedBy"])?
            .map(|(value, at)| -> Result<pb::RequestedBy, String> {
                let mut f = Fields::of(&value, &at)?;
                let requested_by = pb::RequestedBy {
                    kind: f.string(&["kind"])?.unwrap_or_default(),
                    id: f.string(&["id"])?.unwrap_or_default(),
                    label: f.string(&["label"])?,
                };
                f.finish()?;
                Ok(requested_by)
            })
            .transpose()?,
        objective: fields.string(&["objective"])?.unwrap_or_default(),
        operation: fields.string(&["operation"])?.unwrap_or_default(),
        r#type: fields.string(&["type"])?.unwrap_or_default(),
        target: fields
            .object(&["target"])?
            .map(|(value, at)| -> Result<pb::Target, String> {
                let mut f = Fields::of(&value, &at)?;
                let target = pb::Target {
                    repo: f.string(&["repo"])?.unwrap_or_default(),
                    r#ref: f.string(&["ref"])?.unwrap_or_default(),
                    path: f.string(&["path"])?.unwrap_or_default(),
                    repository: f.string(&["repository"])?.unwrap_or_default(),
                };
                f.finish()?;
                Ok(target)
            })
            .transpose()?,
        constraints: fields
            .object(&["constraints"])?
            .map(|(value, at)| -> Result<pb::Constraints, String> {
                let mut f = Fields::of(&value, &at)?;
                let constraints = pb::Constraints {
                    time_budget_seconds: f.int(&["time_budget_seconds", "timeBudgetSeconds"])?,
                    allow_network: f.bool(&["allow_network", "allowNetwork"])?.unwrap_or(false),
                    allow_secrets: f.bool(&["allow_secrets", "allowSecrets"])?.unwrap_or(false),
                };
                f.finish()?;
                Ok(constraints)
            })
            .transpose()?,
        inputs: fields.structure(&["inputs"])?,
        metadata: fields.structure(&["metadata"])?,
        payload: fields.structure(&["payload"])?,
        validate_only: fields
            .bool(&["validate_only", "validateOnly"])?
            .unwrap_or(false),
    };
    fields.finish()?;
    Ok(request)
}

/// The members of one JSON object, taken one by one; what is left is unknown.
struct Fields {
    at: String,
    rest: Map<String, Json>,
}

impl Fields {
    fn of(value: &Json, at: &str) -> Result<Fields, String> {
        let Json::Object(map) = value else {
            return Err(format!("{} must be a JSON object", describe(at)));
        };
        Ok(Fields {
            at: at.to_string(),
            rest: map.clone(),
        })
    }

    fn path(&self, name: &str) -> String {
        if self.at.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.at)
        }
    }

    /// The value under the first of `names` present (and not null).
    fn take(&mut self, names: &[&str]) -> Result<Option<(Json, String)>, String> {
        let mut found = None;
        for name in names {
            if let Some(value) = self.rest.remove(*name) {
                if value.is_null() {
                    continue;
                }
                if found.is_some() {
                    return Err(format!(
                        "{} is given twice (as {})",
                        self.path(names[0]),
                        names.join(" and ")
                    ));
                }
                found = Some((value, self.path(name)));
            }
        }
        Ok(found)
    }

    fn string(&mut self, names: &[&str]) -> Result<Option<String>, String> {
        match self.take(names)? {
            None => Ok(None),
            Some((Json::String(s), _)) => Ok(Some(s)),
            Some((_, at)) => Err(format!("{at} must be a string")),
        }
    }

    fn bool(&mut self, names: &[&str]) -> Result<Option<bool>, String> {
        match self.take(names)? {
            None => Ok(None),
            Some((Json::Bool(b), _)) => Ok(Some(b)),
            Some((_, at)) => Err(format!("{at} must be true or false")),
        }
    }

    fn int(&mut self, names: &[&str]) -> Result<Option<i32>, String> {
        match self.take(names)? {
            None => Ok(None),
            Some((Json::Number(n), at)) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| format!("{at} must be a whole number of seconds")),
            Some((_, at)) => Err(format!("{at} must be a number")),
        }
    }

    fn object(&mut self, names: &[&str]) -> Result<Option<(Json, String)>, String> {
        self.take(names)
    }

    fn structure(&mut self, names: &[&str]) -> Result<Option<Struct>, String> {
        match self.take(names)? {
            None => Ok(None),
            Some((Json::Object(map), _)) => Ok(Some(json_to_struct(&map))),
            Some((_, at)) => Err(format!("{at} must be a JSON object")),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self.rest.keys().next() {
            None => Ok(()),
            Some(name) => Err(format!(
                "unknown field {} in the task file",
                jct::text::escape(&self.path(name))
            )),
        }
    }
}

fn describe(at: &str) -> String {
    if at.is_empty() {
        "the task".to_string()
    } else {
        at.to_string()
    }
}

/// `KEY=VALUE` of `--input`/`--meta`: VALUE is JSON when it parses, else a string.
pub fn key_value(pair: &str) -> Result<(String, Json), String> {
    let (key, value) = pair
        .split_once('=')
        .ok_or_else(|| format!("{pair:?} is not KEY=VALUE"))?;
    if key.is_empty() {
        return Err(format!("{pair:?} has an empty KEY"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Json::String(value.to_string()));
    Ok((key.to_string(), value))
}

// ---------------------------------------------------------------- writing

pub use jct::task_json::{system_time, task, time};

/// What `jct enqueue -o json` prints.
pub fn enqueue_response(response: &pb::EnqueueResponse) -> Json {
    json!({
        "task_id": response.task_id,
        "status": response.status,
        "created": response.created,
        "task": response.task.as_ref().map(task),
    })
}

#[cfg(test)]
#[allow(deprecated)] // the aliases are what these tests check
mod tests {
    use super::*;

    #[test]
    fn a_v1_task_with_aliases_maps_field_by_field() {
        let file = json!({
            "version": "1.0",
            "requested_by": {"kind": "agent", "id": "bot", "label": null},
            "objective": "Add a guide",
            "type": "docs",
            "target": {"repository": "MyOrg/Service.git", "ref": "dev"},
            "constraints": {"time_budget_seconds": 60, "allow_network": false},
            "payload": {"n": 1},
            "metadata": {"ticket": "T-1"},
            "idempotency_key": "k1"
        });
        let request = enqueue_from_json(&file).expect("valid");
        assert_eq!(request.r#type, "docs");
        assert_eq!(request.operation, "");
        let target = request.target.expect("target");
        assert_eq!(target.repository, "MyOrg/Service.git");
        assert_eq!(target.r#ref, "dev");
        assert_eq!(
            request.constraints.and_then(|c| c.time_budget_seconds),
            Some(60)
        );
        assert!(request.payload.is_some() && request.inputs.is_none());
        assert_eq!(request.idempotency_key.as_deref(), Some("k1"));
        assert_eq!(request.requested_by.and_then(|r| r.label), None);
    }

    #[test]
    fn grpcurl_camel_case_is_accepted() {
        let file = json!({
            "requestedBy": {"kind": "human", "id": "a"},
            "objective": "Hello world",
            "operation": "ops",
            "target": {"repo": "myorg/x"},
            "constraints": {"timeBudgetSeconds": 30},
            "idempotencyKey": "k",
            "validateOnly": true
        });
        let request = enqueue_from_json(&file).expect("valid");
        assert_eq!(request.requested_by.map(|r| r.id), Some("a".into()));
        assert!(request.validate_only);
        assert_eq!(request.idempotency_key.as_deref(), Some("k"));
    }

    #[test]
    fn unknown_or_mistyped_fields_are_named() {
        let error = enqueue_from_json(&json!({"objectve": "x"})).err();
        assert_eq!(
            error.as_deref(),
            Some("unknown field objectve in the task file")
        );
        let error = enqueue_from_json(&json!({"target": {"repo": "a/b", "branch": "x"}})).err();
        assert_eq!(
            error.as_deref(),
            Some("unknown field target.branch in the task file")
        );
        let error = enqueue_from_json(&json!({"constraints": {"time_budget_seconds": "60"}})).err();
        assert_eq!(
            error.as_deref(),
            Some("constraints.time_budget_seconds must be a number")
        );
        let error =
            enqueue_from_json(&json!({"idempotency_key": "a", "idempotencyKey": "b"})).err();
        assert!(error.is_some_and(|e| e.contains("given twice")));
        assert!(enqueue_from_json(&json!([1])).is_err());
    }

    #[test]
    fn key_values_are_json_or_strings() {
        assert_eq!(key_value("n=3"), Ok(("n".into(), json!(3))));
        assert_eq!(key_value("s=hello"), Ok(("s".into(), json!("hello"))));
        assert_eq!(
            key_value("o={\"a\":[1]}"),
            Ok(("o".into(), json!({"a": [1]})))
        );
        assert!(key_value("novalue").is_err());
        assert!(key_value("=x").is_err());
    }
}
