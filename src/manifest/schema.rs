//! JSON Schemas for the manifest kinds, generated from the Rust types (schemars), so the
//! schemas editors and CI use can never drift from what Rampart parses. The committed
//! `schemas/` directory is checked against this output by a test.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::{
    ClusterSpec, FenceDeviceSpec, Kind, Metadata, NodeSpec, VirtualIPSpec, VirtualMachineSpec,
    VolumeSpec, API_VERSION,
};

/// Base of the schemas' `$id`s. Tools that don't fetch URLs ignore it.
pub const SCHEMA_BASE: &str = "https://rampart.dev/schemas/v1alpha1";

fn description(kind: Kind) -> &'static str {
    match kind {
        Kind::Cluster => "Cluster-wide policy: timing, quorum, failback, maintenance, fencing. Exactly one per cluster.",
        Kind::Node => "A host: hypervisor or witness, its addresses, capacity, fencing levels and watchdog.",
        Kind::FenceDevice => "A way to power a node off: a standard fence agent or native Redfish, credentials by reference.",
        Kind::Volume => "Storage a VM needs: a DRBD resource, a local disk, or shared storage.",
        Kind::VirtualMachine => "A libvirt domain (KVM or Xen), its volumes and where it may run.",
        Kind::VirtualIP => "A floating address that follows a VM or a group of nodes.",
    }
}

fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator()
}

/// The document schema of `kind` (envelope plus spec) with its definitions collected in `defs`.
fn document(kind: Kind, g: &mut SchemaGenerator) -> Value {
    fn spec<T: JsonSchema>(g: &mut SchemaGenerator) -> Value {
        g.subschema_for::<T>().to_value()
    }
    let metadata = g.subschema_for::<Metadata>().to_value();
    let spec = match kind {
        Kind::Cluster => spec::<ClusterSpec>(g),
        Kind::Node => spec::<NodeSpec>(g),
        Kind::FenceDevice => spec::<FenceDeviceSpec>(g),
        Kind::Volume => spec::<VolumeSpec>(g),
        Kind::VirtualMachine => spec::<VirtualMachineSpec>(g),
        Kind::VirtualIP => spec::<VirtualIPSpec>(g),
    };
    json!({
        "title": kind.as_str(),
        "description": description(kind),
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": false,
        "properties": {
            "apiVersion": { "const": API_VERSION },
            "kind": { "const": kind.as_str() },
            "metadata": metadata,
            "spec": spec,
        }
    })
}

/// One self-contained schema for a kind.
pub fn kind_schema(kind: Kind) -> Value {
    let mut g = generator();
    let mut doc = document(kind, &mut g);
    let obj = doc.as_object_mut().expect("document schema is an object");
    let mut out = Map::new();
    out.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    out.insert(
        "$id".into(),
        json!(format!("{SCHEMA_BASE}/{}.schema.json", kind.file_stem())),
    );
    out.append(obj);
    out.insert("$defs".into(), Value::Object(g.take_definitions(true)));
    Value::Object(out)
}

/// One schema for any Rampart manifest, choosing the kind's schema by `kind`. This is the one
/// to give editors for files that mix kinds.
pub fn any_schema() -> Value {
    let mut g = generator();
    let mut defs = Map::new();
    let mut branches = Vec::new();
    for kind in Kind::ALL {
        defs.insert(kind.as_str().to_string(), document(kind, &mut g));
        branches.push(json!({
            "if": { "properties": { "kind": { "const": kind.as_str() } }, "required": ["kind"] },
            "then": { "$ref": format!("#/$defs/{}", kind.as_str()) }
        }));
    }
    for (k, v) in g.take_definitions(true) {
        defs.insert(k, v);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("{SCHEMA_BASE}/rampart.schema.json"),
        "title": "Rampart manifest",
        "description": "Any Rampart manifest; the `kind` field selects the schema.",
        "type": "object",
        "required": ["apiVersion", "kind"],
        "properties": {
            "apiVersion": { "const": API_VERSION },
            "kind": { "enum": Kind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>() }
        },
        "allOf": branches,
        "$defs": defs,
    })
}

/// Every schema file as (file name, pretty JSON with a trailing newline), index included.
pub fn files() -> Vec<(String, String)> {
    let pretty = |v: &Value| {
        let mut s = serde_json::to_string_pretty(v).expect("schemas serialize");
        s.push('\n');
        s
    };
    let mut out = Vec::new();
    let mut index = Vec::new();
    for kind in Kind::ALL {
        let file = format!("{}.schema.json", kind.file_stem());
        out.push((file.clone(), pretty(&kind_schema(kind))));
        index.push(json!({ "kind": kind.as_str(), "apiVersion": API_VERSION, "schema": file }));
    }
    out.push(("rampart.schema.json".into(), pretty(&any_schema())));
    let index = json!({
        "description": "Rampart manifest schemas, generated by `rampart schema --out schemas`. Use rampart.schema.json for files that hold several kinds.",
        "apiVersion": API_VERSION,
        "any": "rampart.schema.json",
        "kinds": index,
    });
    out.push(("index.json".into(), pretty(&index)));
    out
}
