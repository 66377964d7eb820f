//! Rendering: turning validated manifests into the exact files hosts get.
//!
//! This module owns the text of every host artifact Rampart writes:
//! - [`drbd`]: the DRBD 9 resource file `/etc/drbd.d/NAME.res` of each `drbd` Volume;
//! - [`domain`]: the libvirt domain XML of each VirtualMachine (the admin's own XML unchanged,
//!   or one described from the manifest).
//!
//! Renderers are pure functions of a [`ManifestSet`](crate::manifest::ManifestSet) and their
//! arguments: no I/O, no clock, no randomness, so the same revision renders byte for byte the
//! same text on every node, in `rampart diff` and in tests. They never read a secret: the caller
//! reads it on the node at apply time and passes the value in, and `diff` renders a placeholder
//! naming the reference instead, so secrets never reach diffs or logs.
//!
//! Renderers expect a set that passed validation. They still refuse, with a [`RenderError`],
//! anything that would produce a file the host's tools would misread (a dangling reference, a
//! control character in a path), instead of writing it.

pub mod domain;
pub mod drbd;
mod id;
#[cfg(test)]
mod test_support;

pub use domain::render_domain;
pub use drbd::{
    drbd_volumes_on, render_all_for_node, render_res, render_res_redacted, res_file_name, Secrets,
    RES_DIR,
};
pub use id::{derived_mac, derived_uuid, sha1};

/// Why an artifact could not be rendered. Terminal: rendering the same manifests again gives
/// the same error, so callers should report it rather than retry. Never carries a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("no Volume named `{0}`")]
    UnknownVolume(String),
    #[error("Volume `{volume}` is a {kind} volume, not a DRBD volume: it has no resource file")]
    NotDrbd { volume: String, kind: &'static str },
    #[error("Volume `{0}` has none of `drbd`, `local` or `shared`")]
    NoStorage(String),
    #[error("no Node named `{0}`")]
    UnknownNode(String),
    #[error("{what} names node `{node}`, which has no Node manifest")]
    DanglingNode { what: String, node: String },
    #[error("no VirtualMachine named `{0}`")]
    UnknownVm(String),
    #[error("VirtualMachine `{vm}` names a domain XML that was not loaded; fix the errors `rampart validate` reports")]
    DomainXmlMissing { vm: String },
    #[error("VirtualMachine `{vm}` attaches Volume `{volume}`, which does not exist")]
    DanglingVolume { vm: String, volume: String },
    #[error("the replicas of Volume `{volume}` mix IPv4 and IPv6 replication addresses ({a}, {b}); DRBD connects only addresses of one family")]
    MixedAddressFamilies {
        volume: String,
        a: String,
        b: String,
    },
    #[error("Volume `{volume}` has a shared secret configured, but no secret value was given")]
    SecretMissing { volume: String },
    #[error("Volume `{volume}` has no shared secret configured, but a secret value was given")]
    SecretUnexpected { volume: String },
    /// The value itself is never part of the error.
    #[error("the shared secret of Volume `{volume}` cannot be used: {reason}")]
    BadSecret { volume: String, reason: String },
    #[error("{what} {value:?} cannot be written into {file}: {reason}")]
    BadText {
        what: String,
        value: String,
        file: &'static str,
        reason: String,
    },
}
