//! The committed `schemas/` must be exactly what the code generates, and the generated
//! schemas must agree with the parser: every manifest Rampart accepts passes them, and
//! documents the parser rejects for their shape fail them.

use std::path::{Path, PathBuf};

use rampart::manifest::schema;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_schemas_match_the_generated_ones() {
    let dir = root().join("schemas");
    let generated = schema::files();
    let mut stale = Vec::new();
    for (name, text) in &generated {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(committed) if committed == *text => {}
            Ok(_) => stale.push(format!("{name} differs")),
            Err(e) => stale.push(format!("{name}: {e}")),
        }
    }
    for entry in std::fs::read_dir(&dir).expect("schemas/ exists") {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !generated.iter().any(|(n, _)| *n == name) {
            stale.push(format!("{name} is not generated any more"));
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/ is stale ({}); run `cargo run -- schema --out schemas` and commit the result",
        stale.join("; ")
    );
}

fn yaml_documents(path: &Path) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(de).unwrap();
        if v.is_null() {
            continue;
        }
        let json: Value = serde_json::to_value(&v).unwrap();
        out.push((format!("{} document {}", path.display(), i + 1), json));
    }
    out
}

/// Manifest files of a cluster directory (CI snippets under `examples/ci` are not manifests).
fn manifest_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "ci" || name == "hooks" {
            continue;
        }
        if p.is_dir() {
            manifest_files(&p, out);
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(p);
        }
    }
}

fn any_schema() -> jsonschema::Validator {
    jsonschema::validator_for(&schema::any_schema()).expect("the generated schema compiles")
}

#[test]
fn reference_and_example_manifests_pass_the_schema() {
    let validator = any_schema();
    let mut files = Vec::new();
    manifest_files(&root().join("manifests"), &mut files);
    manifest_files(&root().join("examples"), &mut files);
    let docs: Vec<_> = files.iter().flat_map(|f| yaml_documents(f)).collect();
    assert!(
        docs.len() >= 10,
        "expected the reference cluster and examples, found {} documents",
        docs.len()
    );
    let failures: Vec<String> = docs
        .iter()
        .filter_map(|(name, doc)| {
            let errs: Vec<String> = validator
                .iter_errors(doc)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            (!errs.is_empty()).then(|| format!("{name}: {}", errs.join("; ")))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "schema rejects valid manifests:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_schema_rejects_what_the_parser_rejects() {
    let validator = any_schema();
    let base = r#"{"apiVersion": "rampart.dev/v1alpha1", "kind": "Node", "metadata": {"name": "a"},
                   "spec": {"role": "hypervisor", "addresses": {"management": "10.0.0.1"}}}"#;
    let ok: Value = serde_json::from_str(base).unwrap();
    assert!(validator.is_valid(&ok));
    let bad = [
        ("/spec/rolee", serde_json::json!("x")),
        ("/spec/role", serde_json::json!("king")),
        ("/kind", serde_json::json!("Banana")),
        ("/apiVersion", serde_json::json!("v1")),
        (
            "/spec/capacity",
            serde_json::json!({"cpus": 4, "memory": 4096}),
        ),
        ("/spec/watchdog", serde_json::json!({"timeout": 10})),
    ];
    for (pointer, value) in bad {
        let mut doc = ok.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        doc.pointer_mut(parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert(key.to_string(), value.clone());
        assert!(
            !validator.is_valid(&doc),
            "schema accepts {pointer} = {value}"
        );
        // The parser rejects the same document, for its shape.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("n.yaml"),
            serde_yaml::to_string(&doc).unwrap(),
        )
        .unwrap();
        let report = rampart::manifest::check(&rampart::source::fs::Paths::new([dir.path()]));
        let codes: Vec<&str> = report.rendered().iter().map(|d| d.code).collect();
        assert!(
            codes.iter().any(|c| matches!(
                *c,
                "unknown-field" | "invalid-value" | "unknown-kind" | "unknown-api-version"
            )),
            "parser accepts {pointer} = {value}: {codes:?}"
        );
    }
}
