//! The manifest fast path (`manifest::quick_yaml`) against serde_yaml on real files: every YAML
//! file in the repository, and a generated repository. Where the fast path reads a file, it
//! must read it exactly as serde_yaml does; and the reference manifests, the examples and the
//! generated repository must take the fast path, or it would speed nothing up.

use std::path::Path;

use rampart::manifest::quick_yaml;
use rampart::source::fs::Paths;
use rampart::source::Source;
use rampart::synth::{self, Shape};
use serde::Deserialize;
use serde_yaml::Value;

fn reference(text: &str) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        out.push(Value::deserialize(de).ok()?);
    }
    Some(out)
}

/// The fast path's documents for `text`, checked against serde_yaml; whether it read them.
fn check(name: &str, text: &str) -> bool {
    match quick_yaml::parse(text) {
        None => false,
        Some(docs) => {
            // As text: `==` on serde_yaml's mappings ignores key order.
            assert_eq!(
                format!("{:?}", Some(&docs)),
                format!("{:?}", reference(text).as_ref()),
                "{name}: the fast path disagrees with serde_yaml"
            );
            true
        }
    }
}

#[test]
fn every_yaml_file_in_the_repository_is_read_as_serde_yaml_reads_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Every *.yaml and *.yml file, read the way rampart reads a manifest tree.
    let files =
        Paths::new(["manifests", "examples", "tests"].map(|d| root.join(d))).manifest_files();
    assert!(files.len() > 100, "found only {} YAML files", files.len());
    let mut read = 0;
    for f in &files {
        // Deliberately broken files (unreadable, not UTF-8) in tests/invalid are no YAML.
        let Some(text) = f
            .content
            .as_ref()
            .ok()
            .and_then(|b| std::str::from_utf8(b).ok())
        else {
            continue;
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let rel = f.path.strip_prefix(root).unwrap().display().to_string();
        let fast = check(&rel, text);
        read += usize::from(fast);
        if rel.starts_with("manifests/") || rel.starts_with("examples/three-node") {
            assert!(fast, "{rel}: the reference style should take the fast path");
        }
    }
    // Most of the corpus is in the plain style; the invalid corpus and a few files use
    // constructs left to serde_yaml on purpose.
    assert!(
        read * 10 >= files.len() * 7,
        "only {read} of {} files took the fast path",
        files.len()
    );
}

#[test]
fn a_generated_repository_takes_the_fast_path_whole() {
    let shape = Shape {
        hypervisors: 5,
        vms: 40,
        vip_every: 2,
    };
    let files = synth::files(&shape);
    assert!(files.len() > 40);
    for (name, text) in &files {
        assert!(check(name, text), "{name}: declined");
    }
}
