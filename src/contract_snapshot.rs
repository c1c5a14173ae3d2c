//! Contract governance: the compiled descriptors of `jct.v1` — every service and
//! method, every message, field name, number, type and label — rendered as text
//! and held against `proto/snapshot/jct_v1.txt`. A wire-breaking change turns this
//! red; an intended change is a visible diff of the snapshot
//! (`JCT_UPDATE_SNAPSHOT=1 cargo test -p jct` rewrites it).

use std::fmt::Write;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/snapshot/jct_v1.txt");

fn render(set: &FileDescriptorSet) -> String {
    let mut out = String::new();
    let mut files: Vec<_> = set
        .file
        .iter()
        .filter(|f| f.package() == "jct.v1")
        .collect();
    files.sort_by_key(|f| f.name().to_string());
    for file in files {
        let _ = writeln!(out, "file {}", file.name());
        for service in &file.service {
            let _ = writeln!(out, "  service {}", service.name());
            for method in &service.method {
                let stream = |on: bool| if on { "stream " } else { "" };
                let _ = writeln!(
                    out,
                    "    rpc {}({}{}) returns ({}{})",
                    method.name(),
                    stream(method.client_streaming()),
                    method.input_type(),
                    stream(method.server_streaming()),
                    method.output_type()
                );
            }
        }
        for message in &file.message_type {
            render_message(&mut out, message, "  ");
        }
        for enumeration in &file.enum_type {
            let _ = writeln!(out, "  enum {}", enumeration.name());
            for value in &enumeration.value {
                let _ = writeln!(out, "    {} = {}", value.name(), value.number());
            }
        }
    }
    out
}

fn render_message(out: &mut String, message: &DescriptorProto, indent: &str) {
    let _ = writeln!(out, "{indent}message {}", message.name());
    let mut fields: Vec<_> = message.field.iter().collect();
    fields.sort_by_key(|f| f.number());
    for field in fields {
        let label = match field.label() {
            Label::Repeated => "repeated ",
            _ if field.proto3_optional() => "optional ",
            _ => "",
        };
        let kind = match field.r#type() {
            Type::Message | Type::Enum => field.type_name().to_string(),
            other => format!("{other:?}").to_lowercase(),
        };
        let oneof = match field.oneof_index {
            Some(index) if !field.proto3_optional() => {
                format!(
                    " (oneof {})",
                    message
                        .oneof_decl
                        .get(index as usize)
                        .map_or("?", |o| o.name())
                )
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{indent}  {} = {}: {label}{kind}{oneof}",
            field.name(),
            field.number()
        );
    }
    for nested in &message.nested_type {
        render_message(out, nested, &format!("{indent}  "));
    }
}

#[test]
fn the_wire_contract_matches_its_snapshot() {
    let set = FileDescriptorSet::decode(crate::v1::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    let rendered = render(&set);
    if std::env::var_os("JCT_UPDATE_SNAPSHOT").is_some() {
        std::fs::write(SNAPSHOT, &rendered).expect("write snapshot");
        return;
    }
    let committed = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        committed == rendered,
        "jct.v1 changed on the wire. If intended, run JCT_UPDATE_SNAPSHOT=1 cargo test -p jct \
         and commit proto/snapshot/jct_v1.txt.\n--- committed\n{committed}\n--- now\n{rendered}"
    );
}
