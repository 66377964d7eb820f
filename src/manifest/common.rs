//! Types shared by several manifest kinds: the object envelope, metadata, durations,
//! memory sizes and secret references.
//!
//! Every type here parses strictly (unknown fields are errors) and generates its own JSON
//! Schema, so the schemas in `schemas/` and the parser can never disagree.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The only `apiVersion` this release understands.
pub const API_VERSION: &str = "rampart.dev/v1alpha1";

/// The `apiVersion`/`kind`/`metadata`/`spec` envelope every manifest document has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Object<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
}

/// Identity of an object. `name` is unique per kind within a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Lower-case letters, digits and `-`, at most 63 characters (a DNS label).
    pub name: String,
    /// Free-form labels; nodes are selected by them (for example by a VirtualIP).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form notes for people; Rampart never acts on them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A span of time written the way admins write it: `500ms`, `10s`, `2m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub fn as_millis(&self) -> u128 {
        self.0.as_millis()
    }
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as `500ms`, `10s` or `2m`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                humantime::parse_duration(v.trim())
                    .map(Duration)
                    .map_err(|e| E::custom(duration_error(v, &e)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format_args!(
                    "duration `{v}` has no unit; write `{v}s` for seconds or `{v}ms` for milliseconds"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                self.visit_u64(v.unsigned_abs())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format_args!(
                    "duration `{v}` has no unit; write it like `1500ms` or `1.5s`"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// What is wrong with a duration that does not parse, in an admin's terms rather than the
/// parser's ("expected number at 10").
fn duration_error(v: &str, e: &humantime::DurationError) -> String {
    use humantime::DurationError as E;
    const LIKE: &str = "write it like `500ms`, `10s`, `5m` or `1h 30m`";
    let t = v.trim();
    // The word starting at byte `i` of the trimmed text.
    let word_at = |i: usize| {
        t.get(i..)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_default()
    };
    match e {
        E::Empty => format!("duration is empty; {LIKE}"),
        E::UnknownUnit { unit, .. } if unit.is_empty() => {
            if t.parse::<f64>().is_ok() {
                format!("duration `{t}` has no unit; write `{t}s` for seconds or `{t}ms` for milliseconds")
            } else {
                format!("duration `{t}` ends in a number without a unit; give every number a unit (ms, s, m, h)")
            }
        }
        E::UnknownUnit { unit, .. } => {
            let lower = unit.to_lowercase();
            let number = t.get(..t.find(unit.as_str()).unwrap_or(0)).unwrap_or_default().trim();
            if lower != *unit && humantime::parse_duration(&format!("1{lower}")).is_ok() {
                format!("invalid duration `{t}`: units are written in lower case; write `{number}{lower}`")
            } else {
                format!("invalid duration `{t}`: `{unit}` is not a unit of time; use ms, s, m, h or d, like `{number}s`")
            }
        }
        E::NumberExpected(i) => {
            let w = word_at(*i);
            if w.starts_with('-') {
                format!("duration `{t}` is negative; {LIKE}")
            } else if t.starts_with(['P', 'p']) {
                format!("`{t}` looks like an ISO 8601 duration, which is not read here; {LIKE}")
            } else {
                format!("invalid duration `{t}`: `{w}` is not a number followed by a unit; {LIKE}")
            }
        }
        E::InvalidCharacter(i) => match t.get(*i..).and_then(|r| r.chars().next()) {
            Some(',') => format!(
                "invalid duration `{t}`: separate its parts with spaces, not commas, like `1h 30m`, and write fractions with a dot (`1.5s`)"
            ),
            Some('μ') => format!("invalid duration `{t}`: write microseconds as `us`"),
            Some(c) => format!("invalid duration `{t}`: `{c}` cannot be part of a duration; {LIKE}"),
            None => format!("invalid duration `{t}`; {LIKE}"),
        },
        E::NumberOverflow => format!("duration `{t}` is too large, or finer than a nanosecond"),
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration with a unit: `500ms`, `10s`, `2m`, `1h 30m`.",
            "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*[a-zA-Zµ]+(\\s*[0-9]+(\\.[0-9]+)?\\s*[a-zA-Zµ]+)*\\s*$"
        })
    }
}

/// An amount of memory: `512MiB`, `4GiB`, `1TiB`. Held in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Memory {
    pub mib: u64,
}

impl Memory {
    pub const fn mib(mib: u64) -> Self {
        Memory { mib }
    }
    pub const fn gib(gib: u64) -> Self {
        Memory { mib: gib * 1024 }
    }

    pub fn parse(s: &str) -> Result<Memory, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid memory size `{s}`; write it like `512MiB` or `4GiB`"))?;
        let factor = match unit.trim() {
            "MiB" | "Mi" | "M" => 1,
            "GiB" | "Gi" | "G" => 1024,
            "TiB" | "Ti" | "T" => 1024 * 1024,
            "" => return Err(memory_without_unit(n)),
            other => {
                let binary = match other.to_ascii_lowercase().as_str() {
                    "mb" | "m" | "mib" | "mi" => Some("MiB"),
                    "gb" | "g" | "gib" | "gi" => Some("GiB"),
                    "tb" | "t" | "tib" | "ti" => Some("TiB"),
                    _ => None,
                };
                return Err(match binary {
                    Some(b) => format!(
                        "unknown memory unit `{other}` in `{s}`; memory is counted in binary units: write `{n}{b}`"
                    ),
                    None => format!("unknown memory unit `{other}` in `{s}`; use MiB, GiB or TiB"),
                });
            }
        };
        n.checked_mul(factor)
            .map(Memory::mib)
            .ok_or_else(|| format!("memory size `{s}` is too large"))
    }
}

/// What to write instead of a bare number of memory. The suggestions keep the meaning the
/// number most likely has: `4096` is 4096 MiB (4 GiB), never 4096 GiB; a number of a million
/// or more is likely KiB, as libvirt's `<memory>` counts.
fn memory_without_unit(n: u64) -> String {
    let head = format!("memory size `{n}` has no unit");
    if n >= 1024 * 1024 && n % 1024 == 0 {
        format!(
            "{head}; if it is KiB, as libvirt's `<memory>` counts, write `{}`; if it is MiB, write `{}`",
            Memory::mib(n / 1024),
            Memory::mib(n)
        )
    } else if n >= 1024 && n % 1024 == 0 {
        format!(
            "{head}; write `{n}MiB` ({} GiB) or `{}`",
            n / 1024,
            Memory::mib(n)
        )
    } else if n >= 1024 {
        format!(
            "{head}; write `{n}MiB` (about {:.1} GiB)",
            n as f64 / 1024.0
        )
    } else {
        format!("{head}; write `{n}GiB` or `{n}MiB`, whichever is meant")
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mib % (1024 * 1024) == 0 && self.mib != 0 {
            write!(f, "{}TiB", self.mib / (1024 * 1024))
        } else if self.mib % 1024 == 0 && self.mib != 0 {
            write!(f, "{}GiB", self.mib / 1024)
        } else {
            write!(f, "{}MiB", self.mib)
        }
    }
}

impl Serialize for Memory {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Memory;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a memory size such as `512MiB` or `4GiB`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Memory, E> {
                Memory::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Memory, E> {
                Err(E::custom(memory_without_unit(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Memory, E> {
                self.visit_u64(v.unsigned_abs())
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Memory {
    fn schema_name() -> Cow<'static, str> {
        "Memory".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A memory size with a binary unit: `512MiB`, `4GiB`, `1TiB`.",
            "pattern": "^\\s*[0-9]+\\s*(MiB|Mi|M|GiB|Gi|G|TiB|Ti|T)\\s*$"
        })
    }
}

/// Where a secret lives. Secrets are never written into the manifests themselves: git history
/// keeps everything forever. A plain string in a secret's place is read as `Inline` so that
/// validation can point at it and say how to move it out, instead of failing with a type error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// Read from a file on the node that uses it (mode 0600, owned by root).
    File(PathBuf),
    /// Read from an environment variable of the Rampart process.
    Env(String),
    /// Written inline in the manifest: always a validation error.
    Inline,
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        match self {
            SecretRef::File(p) => m.serialize_entry("file", p)?,
            SecretRef::Env(v) => m.serialize_entry("env", v)?,
            // The value was never kept; only its presence is.
            SecretRef::Inline => m.serialize_entry("inline", "<redacted>")?,
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a secret reference: `{file: PATH}` or `{env: VARIABLE}`")
            }
            // A scalar here is a secret pasted inline. Keep nothing of it.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Ok(SecretRef::Inline)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretRef, E> {
                Ok(SecretRef::Inline)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretRef, E> {
                Ok(SecretRef::Inline)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretRef, E> {
                Ok(SecretRef::Inline)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let mut out = None;
                while let Some(key) = map.next_key::<String>()? {
                    if out.is_some() {
                        return Err(de::Error::custom(
                            "a secret reference takes exactly one of `file` or `env`",
                        ));
                    }
                    out = Some(match key.as_str() {
                        "file" => SecretRef::File(map.next_value()?),
                        "env" => SecretRef::Env(map.next_value()?),
                        other => return Err(de::Error::unknown_field(other, &["file", "env"])),
                    });
                }
                out.ok_or_else(|| {
                    de::Error::custom("a secret reference takes exactly one of `file` or `env`")
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for SecretRef {
    fn schema_name() -> Cow<'static, str> {
        "SecretRef".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Where a secret is kept: a file on the node or an environment variable. Never the secret itself.",
            "oneOf": [
                {
                    "type": "object",
                    "properties": { "file": { "type": "string", "description": "Path of a root-only file holding the secret." } },
                    "required": ["file"],
                    "additionalProperties": false
                },
                {
                    "type": "object",
                    "properties": { "env": { "type": "string", "description": "Name of an environment variable holding the secret." } },
                    "required": ["env"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duration(s: &str) -> String {
        serde_yaml::from_str::<Duration>(s).unwrap_err().to_string()
    }

    fn memory(s: &str) -> String {
        serde_yaml::from_str::<Memory>(s).unwrap_err().to_string()
    }

    #[test]
    fn memory_without_unit_keeps_its_likely_meaning() {
        let m = memory("4096");
        assert!(m.contains("write `4096MiB` (4 GiB) or `4GiB`"), "{m}");
        assert!(!m.contains("4096GiB"), "{m}");
        assert!(memory("\"4096\"").contains("`4096MiB` (4 GiB)"));
        assert!(memory("4000").contains("`4000MiB` (about 3.9 GiB)"));
        assert!(memory("16").contains("write `16GiB` or `16MiB`"));
        let m = memory("4194304");
        assert!(
            m.contains("KiB") && m.contains("`4GiB`") && m.contains("`4TiB`"),
            "{m}"
        );
        assert!(memory("4GB").contains("write `4GiB`"));
        assert!(memory("4 kb").contains("use MiB, GiB or TiB"));
    }

    #[test]
    fn duration_errors_speak_of_durations_not_parser_offsets() {
        let cases = [
            (
                "5 minutes please",
                "`please` is not a number followed by a unit",
            ),
            ("\"10\"", "duration `10` has no unit; write `10s`"),
            ("\"1.5\"", "duration `1.5` has no unit; write `1.5s`"),
            ("10S", "units are written in lower case; write `10s`"),
            (
                "10x",
                "`x` is not a unit of time; use ms, s, m, h or d, like `10s`",
            ),
            ("-5s", "is negative"),
            ("PT10S", "ISO 8601"),
            ("1h, 30m", "not commas"),
            ("\"\"", "duration is empty"),
            ("99999999999999999999s", "too large"),
            ("1h 30", "ends in a number without a unit"),
        ];
        for (input, want) in cases {
            let got = duration(input);
            assert!(got.contains(want), "{input}: {got}");
            assert!(!got.contains(" at "), "{input}: parser offsets leak: {got}");
        }
        assert_eq!(
            serde_yaml::from_str::<Duration>("1h 30m").unwrap(),
            Duration::from_secs(5400)
        );
    }
}

/// A secret's value, read on the node that uses it. It prints as `<redacted>` in `Debug` and
/// has no `Display`, so it cannot reach a log line or an error by accident; [`Secret::expose`]
/// is the one way to the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a secret could not be read. Names where it was looked for, never any of its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the secret file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("the environment variable {0} holding a secret is not set (or not UTF-8)")]
    Env(String),
    #[error("the secret file {0} is empty")]
    Empty(PathBuf),
    #[error("a secret written inline in a manifest is never used; move it to a file or an environment variable")]
    Inline,
}

impl SecretRef {
    /// Read the secret: a file's content or an environment variable's value, without a
    /// trailing newline (files written by `echo` end in one).
    pub fn read(&self) -> Result<Secret, SecretError> {
        match self {
            SecretRef::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| SecretError::File {
                    path: path.clone(),
                    reason: e.kind().to_string(),
                })?;
                let value = text.strip_suffix('\n').unwrap_or(&text);
                let value = value.strip_suffix('\r').unwrap_or(value);
                if value.is_empty() {
                    return Err(SecretError::Empty(path.clone()));
                }
                Ok(Secret(value.to_string()))
            }
            SecretRef::Env(var) => std::env::var(var)
                .map(Secret)
                .map_err(|_| SecretError::Env(var.clone())),
            SecretRef::Inline => Err(SecretError::Inline),
        }
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn reads_a_file_without_its_newline_and_never_prints_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "hunter2\n").unwrap();
        let s = SecretRef::File(p.clone()).read().unwrap();
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        std::fs::write(&p, "\n").unwrap();
        assert_eq!(
            SecretRef::File(p.clone()).read(),
            Err(SecretError::Empty(p))
        );
        let missing = SecretRef::File(dir.path().join("nope")).read().unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
        assert_eq!(SecretRef::Inline.read(), Err(SecretError::Inline));
        assert_eq!(
            SecretRef::Env("RAMPART_TEST_UNSET_SECRET_VAR".into()).read(),
            Err(SecretError::Env("RAMPART_TEST_UNSET_SECRET_VAR".into()))
        );
    }
}
