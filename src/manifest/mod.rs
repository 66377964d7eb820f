//! Manifests: the admin's YAML, parsed into typed objects and validated.
//!
//! This module owns the manifest kinds, their loading from a [`Source`](crate::source::Source)
//! (a directory tree or a git revision), validation beyond the schema, and the JSON Schemas.
//! It never touches a host or the store: it turns text into a [`ManifestSet`] and diagnostics.

pub mod cluster;
pub mod common;
pub mod diag;
pub mod fence;
mod load;
pub mod node;
pub mod quick_yaml;
pub mod schema;
pub mod span;
mod validate;
pub mod vip;
pub mod vm;
pub mod volume;
mod xmlscan;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

pub use cluster::ClusterSpec;
pub use common::{Duration, Memory, Metadata, Object, SecretRef, API_VERSION};
pub use diag::{Anchor, Diagnostic, Part, Rendered, Severity};
pub use fence::FenceDeviceSpec;
pub use load::load;
pub use node::NodeSpec;
pub use validate::validate;
pub use vip::VirtualIPSpec;
pub use vm::VirtualMachineSpec;
pub use volume::VolumeSpec;

pub type Cluster = Object<ClusterSpec>;
pub type Node = Object<NodeSpec>;
pub type FenceDevice = Object<FenceDeviceSpec>;
pub type Volume = Object<VolumeSpec>;
pub type VirtualMachine = Object<VirtualMachineSpec>;
pub type VirtualIP = Object<VirtualIPSpec>;

/// The manifest kinds, in the order they are documented and listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    Cluster,
    Node,
    FenceDevice,
    Volume,
    VirtualMachine,
    VirtualIP,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Cluster,
        Kind::Node,
        Kind::FenceDevice,
        Kind::Volume,
        Kind::VirtualMachine,
        Kind::VirtualIP,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "Cluster",
            Kind::Node => "Node",
            Kind::FenceDevice => "FenceDevice",
            Kind::Volume => "Volume",
            Kind::VirtualMachine => "VirtualMachine",
            Kind::VirtualIP => "VirtualIP",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// File stem of the kind's schema: `virtual-machine` for `schemas/virtual-machine.schema.json`.
    pub fn file_stem(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::Node => "node",
            Kind::FenceDevice => "fence-device",
            Kind::Volume => "volume",
            Kind::VirtualMachine => "virtual-machine",
            Kind::VirtualIP => "virtual-ip",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One file's text, kept so diagnostics can be located after the fact.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path as shown to the user (relative to the source root or the working directory).
    pub path: PathBuf,
    pub text: Arc<str>,
}

/// Where an object came from: a document in a file of the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub file: usize,
    pub doc: usize,
}

impl Origin {
    /// The value at `path` (`spec.replicas[0].node`).
    pub fn at(&self, path: impl Into<String>) -> Anchor {
        Anchor::Path {
            file: self.file,
            doc: self.doc,
            path: path.into(),
            part: Part::Value,
        }
    }
    /// The key of the field at `path`.
    pub fn key(&self, path: impl Into<String>) -> Anchor {
        Anchor::Path {
            file: self.file,
            doc: self.doc,
            path: path.into(),
            part: Part::Key,
        }
    }
}

/// An object and where it was written.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    pub object: T,
    pub origin: Origin,
}

/// Every object of a revision, by kind and name. Names are unique per kind: a duplicate is
/// reported and only the first definition kept.
#[derive(Debug, Clone, Default)]
pub struct ManifestSet {
    pub files: Vec<SourceFile>,
    pub clusters: Vec<Entry<Cluster>>,
    pub nodes: BTreeMap<String, Entry<Node>>,
    pub fence_devices: BTreeMap<String, Entry<FenceDevice>>,
    pub volumes: BTreeMap<String, Entry<Volume>>,
    pub vms: BTreeMap<String, Entry<VirtualMachine>>,
    pub vips: BTreeMap<String, Entry<VirtualIP>>,
    /// The domain XML of each VM that names an `xmlFile`, read from the same source.
    pub domain_xml: BTreeMap<String, Arc<str>>,
    /// Documents of a known kind that failed to load (a schema error was reported). Validation
    /// consults them so it does not pile conclusions onto the missing object: "Node `hv2` is
    /// not defined" when `hv2`'s document has a misspelt field says nothing new.
    pub failed: Vec<Failed>,
}

/// A document whose kind is known but which did not load, with what can still be read of it.
#[derive(Debug, Clone)]
pub struct Failed {
    pub kind: Kind,
    /// `metadata.name`, when the raw document has one that is a string.
    pub name: Option<String>,
    pub origin: Origin,
    /// The raw document, for references that can still be read from it (the fence devices a
    /// Node names, the volumes a VirtualMachine attaches).
    pub value: serde_yaml::Value,
}

impl Failed {
    /// The raw value at a dotted path of mapping keys (`spec.fencing`), if there is one.
    pub fn get(&self, path: &str) -> Option<&serde_yaml::Value> {
        path.split('.').try_fold(&self.value, |v, key| v.get(key))
    }
}

impl ManifestSet {
    /// The Cluster object, when there is exactly one.
    pub fn cluster(&self) -> Option<&Cluster> {
        match self.clusters.as_slice() {
            [one] => Some(&one.object),
            _ => None,
        }
    }

    /// Every object as (kind, name, canonical YAML), sorted by kind then name. Used by the
    /// manifest diff: formatting and comments don't count as changes, content does.
    pub fn canonical_objects(&self) -> Vec<(Kind, String, String)> {
        fn yaml<T: Serialize>(t: &T) -> String {
            serde_yaml::to_string(t).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
        }
        let mut out = Vec::new();
        for c in &self.clusters {
            out.push((
                Kind::Cluster,
                c.object.metadata.name.clone(),
                yaml(&c.object),
            ));
        }
        fn add<T: Serialize>(
            out: &mut Vec<(Kind, String, String)>,
            kind: Kind,
            m: &BTreeMap<String, Entry<T>>,
        ) {
            out.extend(m.iter().map(|(n, e)| (kind, n.clone(), yaml(&e.object))));
        }
        add(&mut out, Kind::Node, &self.nodes);
        add(&mut out, Kind::FenceDevice, &self.fence_devices);
        add(&mut out, Kind::Volume, &self.volumes);
        add(&mut out, Kind::VirtualMachine, &self.vms);
        add(&mut out, Kind::VirtualIP, &self.vips);
        out
    }

    /// Whether a document of `kind` failed to load (named or not).
    pub fn failed_any(&self, kind: Kind) -> bool {
        self.failed.iter().any(|f| f.kind == kind)
    }

    pub fn object_count(&self) -> usize {
        self.clusters.len()
            + self.nodes.len()
            + self.fence_devices.len()
            + self.volumes.len()
            + self.vms.len()
            + self.vips.len()
    }
}

/// The result of loading and validating a source.
#[derive(Debug, Clone)]
pub struct Report {
    pub set: ManifestSet,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
    pub fn rendered(&self) -> Vec<Rendered> {
        diag::render(&self.set.files, &self.diagnostics)
    }
}

/// Load every manifest of `source` and validate the whole set.
pub fn check(source: &dyn crate::source::Source) -> Report {
    let (set, mut diagnostics) = load(source);
    diagnostics.extend(validate(&set));
    Report { set, diagnostics }
}
