//! The `FenceDevice` kind: a way to power a node off.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, SecretRef};

/// Exactly one of `agent` or `redfish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FenceDeviceSpec {
    /// A standard fence agent (`fence_ipmilan`, `fence_redfish`, `fence_virsh`, `fence_xvm`,
    /// ...), driven through its stdin `key=value` protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<FenceAgent>,
    /// Native Redfish `ComputerSystem.Reset` over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redfish: Option<Redfish>,
    /// Per-action timeout; defaults to the Cluster's `timing.fenceTimeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Nodes allowed to run this device (for example the peer on a crosslink to the BMC).
    /// Empty means any node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs_on: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FenceAgent {
    /// The agent's executable name, found on `PATH` (for example `fence_ipmilan`).
    pub name: String,
    /// Agent options as on its stdin (`ip`, `username`, `lanplus`, `cipher`, ...). Numbers
    /// and booleans are passed as written. Never a password: put those in `credentials`.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "scalar_map"
    )]
    #[schemars(schema_with = "scalar_map_schema")]
    pub parameters: BTreeMap<String, String>,
    /// Secrets passed on the agent's stdin, keyed by option name (usually `password`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub credentials: BTreeMap<String, SecretRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Redfish {
    /// The BMC's base URL, `https://HOST[:PORT]`.
    pub endpoint: String,
    /// The ComputerSystem to reset, e.g. `/redfish/v1/Systems/1`. Default: the only one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub username: SecretRef,
    pub password: SecretRef,
    /// Verify the BMC's TLS certificate. Default true; turn off only for self-signed BMCs.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
}

fn default_true() -> bool {
    true
}

/// A map whose values may be written as strings, numbers or booleans (`lanplus: 1`), all
/// passed to the agent as text.
fn scalar_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    use serde::de::Error;
    let raw = BTreeMap::<String, serde_yaml::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_yaml::Value::String(s) => s,
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => if b { "1" } else { "0" }.to_string(),
                _ => {
                    return Err(D::Error::custom(format_args!(
                        "parameter `{k}` must be a string, number or boolean"
                    )))
                }
            };
            Ok((k, s))
        })
        .collect()
}

fn scalar_map_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": { "type": ["string", "number", "boolean"] }
    })
}

/// Agent parameter names that carry secrets and so must come from `credentials`.
pub const SECRET_PARAMETERS: &[&str] = &[
    "password",
    "passwd",
    "community",
    "snmp_priv_passwd",
    "identity_file",
    "password_script",
    "passwd_script",
    "secret",
    "token",
    "auth",
];
