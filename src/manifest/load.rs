//! From files to typed objects. Every problem becomes a diagnostic; loading never stops at
//! the first one and never panics, whatever the bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::diag::{Anchor, Diagnostic};
use super::{Entry, Failed, Kind, ManifestSet, Object, Origin, SourceFile, API_VERSION};
use crate::source::{resolve_relative, Source};

/// Load every manifest file of `source` into a [`ManifestSet`].
pub fn load(source: &dyn Source) -> (ManifestSet, Vec<Diagnostic>) {
    let mut set = ManifestSet::default();
    let mut diags = Vec::new();
    let mut texts: Vec<(usize, Arc<str>)> = Vec::new();
    for raw in source.manifest_files() {
        let file = set.files.len();
        let bytes = match raw.content {
            Ok(b) => b,
            Err(msg) => {
                set.files.push(SourceFile {
                    path: raw.path,
                    text: Arc::from(""),
                });
                let hint = if msg.contains("refused") {
                    "is it a disk image, a dump or a log in the manifest tree? Move it out, or split the manifests into smaller files"
                } else if msg.contains("link loop") {
                    "a manifest tree must not link back into itself"
                } else if msg.contains("os error 2)") {
                    "is it a symbolic link to a file that does not exist? Fix or remove the link"
                } else {
                    "make the file readable by the user running rampart, or move it out of the manifest tree"
                };
                diags
                    .push(Diagnostic::error("unreadable-file", Anchor::File(file), msg).hint(hint));
                continue;
            }
        };
        let text: Arc<str> = match String::from_utf8(bytes) {
            // A byte order mark, as some Windows editors write, is no part of the text: libyaml
            // counts it as a column of the first line and then rejects the second, and editors
            // do not count it in the positions they show.
            Ok(s) => Arc::from(s.strip_prefix('\u{feff}').unwrap_or(&s)),
            Err(e) => {
                let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let text = String::from_utf8_lossy(good);
                let line = text.matches('\n').count() + 1;
                let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                set.files.push(SourceFile {
                    path: raw.path,
                    text: Arc::from(""),
                });
                diags.push(
                    Diagnostic::error(
                        "not-utf8",
                        Anchor::Pos { file, line, column },
                        format!(
                            "file is not UTF-8 text (invalid byte at offset {})",
                            e.utf8_error().valid_up_to()
                        ),
                    )
                    .hint("manifests are UTF-8 YAML; is this a binary file in the manifest tree?"),
                );
                continue;
            }
        };
        set.files.push(SourceFile {
            path: raw.path,
            text: text.clone(),
        });
        texts.push((file, text));
    }
    // Parsing YAML is most of the work and each file stands alone: parse them on every core,
    // then build the set in file order, so the result does not depend on the threads.
    // In batches: parsing every file at once was no faster, and its peak memory was higher
    // (72 MiB against 52 MiB for 10,000 VMs), the parsing threads' heaps holding what the
    // main thread had yet to take.
    for batch in texts.chunks(PARSE_BATCH) {
        let parsed = parse_all(batch);
        for ((file, _), p) in batch.iter().zip(parsed) {
            load_file(&mut set, &mut diags, *file, p);
        }
    }
    resolve_domain_xml(source, &mut set, &mut diags);
    (set, diags)
}

/// The documents of one file, each typed (or with why not), and the syntax error that ended
/// the file, if any.
struct ParsedFile {
    docs: Vec<Typed>,
    error: Option<Diagnostic>,
}

/// A document turned into its typed object, on the parsing thread; what it found wrong.
struct Typed {
    origin: Origin,
    object: Option<AnyObject>,
    diags: Vec<Diagnostic>,
    failed: Option<Failed>,
}

/// The typed object of a document of any kind.
enum AnyObject {
    Cluster(super::Cluster),
    Node(super::Node),
    FenceDevice(super::FenceDevice),
    Volume(super::Volume),
    VirtualMachine(super::VirtualMachine),
    VirtualIP(super::VirtualIP),
}

/// Files parsed together before their documents join the set.
const PARSE_BATCH: usize = 2048;

fn parse_file(file: usize, text: &str) -> ParsedFile {
    let mut docs = Vec::new();
    // Most manifests are in the plain block style the fast path reads; it declines anything
    // else, and serde_yaml then reads the whole file.
    if let Some(values) = super::quick_yaml::parse(text) {
        for (doc, v) in values.into_iter().enumerate() {
            if !v.is_null() {
                docs.push(type_document(Origin { file, doc }, v));
            }
        }
        return ParsedFile { docs, error: None };
    }
    for (doc, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match serde_yaml::Value::deserialize(de) {
            Ok(v) if v.is_null() => {} // an empty document, as between `---` lines
            Ok(v) => docs.push(type_document(Origin { file, doc }, v)),
            Err(e) => {
                let mut d = yaml_error(file, text, &e);
                // serde_yaml places a duplicate key at its mapping; point at the repeat instead,
                // when the index found it in the same document (the two parsers can disagree on
                // what is a duplicate, `1` and `"1"` for example).
                if e.to_string().contains("duplicate entry") {
                    match super::span::SpanIndex::build(text).first_duplicate() {
                        Some((d_doc, path)) if d_doc == doc => {
                            d.anchor = Origin { file, doc }.key(path)
                        }
                        _ => {}
                    }
                }
                // The parser cannot resynchronise after a syntax error.
                return ParsedFile {
                    docs,
                    error: Some(d),
                };
            }
        }
    }
    ParsedFile { docs, error: None }
}

fn parse_all(texts: &[(usize, Arc<str>)]) -> Vec<ParsedFile> {
    crate::par::par_map(texts, |(f, t)| parse_file(*f, t))
}

fn load_file(set: &mut ManifestSet, diags: &mut Vec<Diagnostic>, file: usize, parsed: ParsedFile) {
    let documents = parsed.docs.len();
    for typed in parsed.docs {
        add_document(set, diags, typed);
    }
    if let Some(d) = parsed.error {
        diags.push(d);
        return;
    }
    if documents == 0 {
        diags.push(
            Diagnostic::error("empty-file", Anchor::File(file), "file holds no manifest")
                .hint("add a manifest to it or delete it"),
        );
    }
}

fn yaml_error(file: usize, text: &str, e: &serde_yaml::Error) -> Diagnostic {
    let anchor = match e.location() {
        Some(l) => {
            let (line, column) = super::span::within_text(text, l.line(), l.column());
            Anchor::Pos { file, line, column }
        }
        None => Anchor::File(file),
    };
    let mut msg = strip_location(&e.to_string(), e.location());
    // `spec: duplicate entry with key "cpus"` -> `duplicate key `cpus` in `spec``.
    if let Some(i) = msg.find("duplicate entry with key ") {
        let key = msg[i + "duplicate entry with key ".len()..].trim_matches('"');
        let within = msg[..i].trim_end_matches(": ");
        msg = if within.is_empty() || within == "." {
            format!("duplicate key `{key}`")
        } else {
            format!("duplicate key `{key}` in `{within}`")
        };
    }
    // libyaml names where an unclosed construct began in its context: ", while scanning a
    // quoted scalar at line L column C". That is where the fix goes. A context without a
    // position (serde_yaml leaves out line 1 column 1) says nothing useful.
    if let Some(i) = msg.find(", while ") {
        if !msg[i..].contains(" at line ") {
            msg.truncate(i);
        }
    }
    let opened = |what: &str| {
        msg.split_once(what)
            .and_then(|(_, rest)| rest.strip_prefix(" at "))
            .map(str::to_string)
    };
    let hint = if msg.contains("duplicate") {
        "a key may appear only once in a mapping; remove or merge the repeated one".to_string()
    } else if msg.contains("recursion limit") {
        "the document nests too deeply to be a manifest".to_string()
    } else if msg.contains("repetition limit") || msg.contains("alias") {
        "the document expands too many aliases to be a manifest".to_string()
    } else if msg.contains("tab character") {
        // libyaml's context here ("while scanning a plain scalar" on the line above) misleads.
        if let Some(i) = msg.find(", while ") {
            msg.truncate(i);
        }
        "indent with spaces; YAML does not allow tabs in indentation".to_string()
    } else if msg.contains("did not find expected key")
        || msg.contains("mapping values are not allowed")
    {
        "check the indentation: the keys of one mapping line up in the same column; quote a value that contains `: `".to_string()
    } else if let Some(at) = opened("while scanning a quoted scalar") {
        format!("close the quote opened at {at}")
    } else if let Some(at) = opened("while parsing a flow sequence") {
        format!("close the `[` opened at {at}, or add the missing `,` between its items")
    } else if let Some(at) = opened("while parsing a flow mapping") {
        format!("close the `{{` opened at {at}, or add the missing `,` between its entries")
    } else {
        "fix the YAML syntax; a tab in indentation or an unclosed quote or bracket are common causes"
            .to_string()
    };
    Diagnostic::error("yaml-syntax", anchor, format!("invalid YAML: {msg}")).hint(hint)
}

/// serde_yaml appends the problem's location (" at line L column C") to its messages; that
/// location is printed in front, so it is removed here. Only that exact text goes: libyaml's
/// context after it (", while parsing a flow sequence at line 3 column 14") says where an
/// unclosed construct began, and a value quoted in a message may itself contain " at line ".
fn strip_location(msg: &str, location: Option<serde_yaml::Location>) -> String {
    let Some(l) = location else {
        return msg.to_string();
    };
    for at in [
        format!(" at line {} column {}", l.line(), l.column()),
        format!(" at position {}", l.index()),
    ] {
        if let Some(i) = msg.find(&at) {
            return format!("{}{}", &msg[..i], &msg[i + at.len()..]);
        }
    }
    msg.to_string()
}

/// serde's messages name Rust types (`expected u32`, `expected struct NodeAddresses`); say
/// what to write instead.
fn plain_expected(msg: &str) -> String {
    // `invalid type: unit value` is serde's name for `key:` with nothing after it.
    let msg = &msg.replacen("invalid type: unit value,", "invalid type: empty value,", 1);
    let Some(i) = msg.rfind("expected ") else {
        return msg.to_string();
    };
    let (head, expected) = msg.split_at(i + "expected ".len());
    let plain = match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" | "u64" | "usize" => "a whole number, 0 or more",
        "i32" => "a whole number from -2147483648 to 2147483647",
        "i8" | "i16" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        e if e.starts_with("struct ") || e == "a map" => "a mapping (`key: value` lines)",
        e if e.starts_with("enum ") => "one of the values listed in the schema",
        _ => return msg.to_string(),
    };
    format!("{head}{plain}")
}

/// Add a typed document to the set: names are unique per kind.
fn add_document(set: &mut ManifestSet, diags: &mut Vec<Diagnostic>, typed: Typed) {
    let Typed {
        origin,
        object,
        diags: found,
        failed,
    } = typed;
    diags.extend(found);
    set.failed.extend(failed);
    let Some(object) = object else {
        return;
    };
    let files = &set.files;
    match object {
        AnyObject::Cluster(o) => set.clusters.push(Entry { object: o, origin }),
        AnyObject::Node(o) => insert(&mut set.nodes, files, diags, origin, Kind::Node, o),
        AnyObject::FenceDevice(o) => insert(
            &mut set.fence_devices,
            files,
            diags,
            origin,
            Kind::FenceDevice,
            o,
        ),
        AnyObject::Volume(o) => insert(&mut set.volumes, files, diags, origin, Kind::Volume, o),
        AnyObject::VirtualMachine(o) => {
            insert(&mut set.vms, files, diags, origin, Kind::VirtualMachine, o)
        }
        AnyObject::VirtualIP(o) => insert(&mut set.vips, files, diags, origin, Kind::VirtualIP, o),
    }
}

/// Type one document (on a parsing thread: it needs nothing but the document).
fn type_document(origin: Origin, value: serde_yaml::Value) -> Typed {
    let mut out = Typed {
        origin,
        object: None,
        diags: Vec::new(),
        failed: None,
    };
    let diags = &mut out.diags;
    let Some(map) = value.as_mapping() else {
        diags.push(
            Diagnostic::error(
                "not-a-manifest",
                origin.at(""),
                "document is not a mapping with `apiVersion`, `kind`, `metadata` and `spec`",
            )
            .hint("every YAML document in the manifest tree must be a Rampart manifest"),
        );
        return out;
    };
    match map.get("apiVersion").map(|v| v.as_str()) {
        None => {
            diags.push(
                Diagnostic::error("missing-field", origin.at(""), "missing field `apiVersion`")
                    .hint(format!(
                        "add `apiVersion: {API_VERSION}` at the top of the document"
                    )),
            );
            return out;
        }
        Some(Some(API_VERSION)) => {}
        Some(other) => {
            let msg = match other {
                Some(s) => format!("unknown apiVersion `{s}`"),
                None => format!(
                    "apiVersion is {}, not a version string",
                    map.get("apiVersion").map_or("empty", shape)
                ),
            };
            diags.push(
                Diagnostic::error("unknown-api-version", origin.at("apiVersion"), msg).hint(
                    format!("this version of Rampart reads `apiVersion: {API_VERSION}`"),
                ),
            );
            return out;
        }
    }
    let kind_str = match map.get("kind") {
        None => {
            diags.push(
                Diagnostic::error("missing-field", origin.at(""), "missing field `kind`")
                    .hint(format!("add `kind:` with one of {}", kind_list())),
            );
            return out;
        }
        Some(k) => match k.as_str() {
            Some(s) => s.to_string(),
            None => {
                diags.push(
                    Diagnostic::error(
                        "unknown-kind",
                        origin.at("kind"),
                        format!("kind is {}, not the name of a kind", shape(k)),
                    )
                    .hint(format!("the kinds are {}", kind_list())),
                );
                return out;
            }
        },
    };
    let Some(kind) = Kind::parse(&kind_str) else {
        let mut d = Diagnostic::error(
            "unknown-kind",
            origin.at("kind"),
            format!("unknown kind `{kind_str}`"),
        );
        d = match did_you_mean(&kind_str, Kind::ALL.iter().map(|k| k.as_str())) {
            Some(s) => d.hint(format!("did you mean `{s}`? The kinds are {}", kind_list())),
            None => d.hint(format!("the kinds are {}", kind_list())),
        };
        diags.push(d);
        return out;
    };
    let failed = &mut out.failed;
    out.object = match kind {
        Kind::Cluster => typed(failed, diags, origin, kind, value).map(AnyObject::Cluster),
        Kind::Node => typed(failed, diags, origin, kind, value).map(AnyObject::Node),
        Kind::FenceDevice => typed(failed, diags, origin, kind, value).map(AnyObject::FenceDevice),
        Kind::Volume => typed(failed, diags, origin, kind, value).map(AnyObject::Volume),
        Kind::VirtualMachine => {
            typed(failed, diags, origin, kind, value).map(AnyObject::VirtualMachine)
        }
        Kind::VirtualIP => typed(failed, diags, origin, kind, value).map(AnyObject::VirtualIP),
    };
    out
}

/// What a YAML value is, for messages about a value of the wrong shape.
fn shape(v: &serde_yaml::Value) -> &'static str {
    use serde_yaml::Value;
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn kind_list() -> String {
    Kind::ALL
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn insert<S>(
    map: &mut BTreeMap<String, Entry<Object<S>>>,
    files: &[SourceFile],
    diags: &mut Vec<Diagnostic>,
    origin: Origin,
    kind: Kind,
    object: Object<S>,
) {
    let name = object.metadata.name.clone();
    match map.get(&name) {
        Some(first) => diags.push(
            Diagnostic::error(
                "duplicate-name",
                origin.at("metadata.name"),
                format!("{kind} `{name}` is defined twice"),
            )
            .hint(format!(
                "names are unique per kind; the first definition is in {} (document {}); rename or remove one",
                files[first.origin.file].path.display(),
                first.origin.doc + 1
            )),
        ),
        None => {
            map.insert(name, Entry { object, origin });
        }
    }
}

/// The typed object of a document, or `None` after reporting why it is not one. A document
/// that does not load is remembered in `failed` with its name, when it has a readable one, so
/// that validation can leave out what follows only from its absence.
fn typed<S: DeserializeOwned>(
    failed: &mut Option<Failed>,
    diags: &mut Vec<Diagnostic>,
    origin: Origin,
    kind: Kind,
    value: serde_yaml::Value,
) -> Option<Object<S>> {
    // Straight from the value first: tracking the path of every field costs time and is only
    // needed to say where a problem is, so it is done again, with the path, for a document
    // that has one (the same deserializer, so the same outcome).
    if let Ok(o) = Object::<S>::deserialize(&value) {
        return Some(o);
    }
    match serde_path_to_error::deserialize::<_, Object<S>>(&value) {
        Ok(o) => Some(o),
        Err(e) => {
            diags.push(schema_error(origin, kind, &e));
            let name = value
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|n| n.as_str())
                .map(str::to_string);
            *failed = Some(Failed {
                kind,
                name,
                origin,
                value,
            });
            None
        }
    }
}

/// Turn a serde error into a diagnostic at the field it is about, with a hint.
fn schema_error(
    origin: Origin,
    kind: Kind,
    e: &serde_path_to_error::Error<serde_yaml::Error>,
) -> Diagnostic {
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let msg = plain_expected(&strip_location(
        &e.inner().to_string(),
        e.inner().location(),
    ));
    let schema = format!("schemas/{}.schema.json", kind.file_stem());
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let expected: Vec<&str> = rest.split('`').skip(2).step_by(2).collect();
        let hint = match did_you_mean(field, expected.iter().copied()) {
            Some(s) => format!("did you mean `{s}`? Otherwise remove it (see {schema})"),
            None if expected.is_empty() => format!("remove it (see {schema})"),
            None => format!(
                "remove it; the fields here are {} (see {schema})",
                expected
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return Diagnostic::error(
            "unknown-field",
            origin.key(path),
            format!("unknown field `{field}`"),
        )
        .hint(hint);
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let at = if path.is_empty() {
            "the document".to_string()
        } else {
            format!("`{path}`")
        };
        return Diagnostic::error(
            "missing-field",
            origin.key(path.clone()),
            format!("missing field `{field}`"),
        )
        .hint(format!("add `{field}:` to {at} (see {schema})"));
    }
    if msg.starts_with("unknown variant") {
        return Diagnostic::error(
            "invalid-value",
            origin.at(path),
            msg.replace(", expected", "; expected"),
        )
        .hint(format!("use one of the listed values (see {schema})"));
    }
    Diagnostic::error("invalid-value", origin.at(path), msg)
        .hint(format!("see {schema} for what this field takes"))
}

/// The closest candidate within a small edit distance, for "did you mean" hints: the first
/// of the closest, at most a third of the candidate's length away (at least 1).
///
/// Validation asks this once per unresolved name, against every name of a kind, so it must be
/// cheap: a repository of thousands of VMs with a renamed volume would otherwise take minutes.
/// Distances are only computed as far as they can still beat the best so far.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let w: Vec<char> = word.chars().map(|c| c.to_ascii_lowercase()).collect();
    let mut c_chars: Vec<char> = Vec::new();
    let mut rows = (Vec::new(), Vec::new());
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        let mut limit = (c.len() / 3).max(1);
        if let Some((d, _)) = best {
            if d == 0 {
                break;
            }
            limit = limit.min(d - 1);
        }
        c_chars.clear();
        c_chars.extend(c.chars().map(|c| c.to_ascii_lowercase()));
        if let Some(d) = edit_distance_within(&w, &c_chars, limit, &mut rows) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// The Levenshtein distance of `a` and `b` when it is at most `limit`.
fn edit_distance_within(
    a: &[char],
    b: &[char],
    limit: usize,
    (prev, cur): &mut (Vec<usize>, Vec<usize>),
) -> Option<usize> {
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    prev.clear();
    prev.extend(0..=b.len());
    for (i, ca) in a.iter().enumerate() {
        cur.clear();
        cur.push(i + 1);
        let mut row_min = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let d = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
            row_min = row_min.min(d);
            cur.push(d);
        }
        if row_min > limit {
            return None;
        }
        std::mem::swap(prev, cur);
    }
    Some(prev[b.len()]).filter(|d| *d <= limit)
}

fn resolve_domain_xml(source: &dyn Source, set: &mut ManifestSet, diags: &mut Vec<Diagnostic>) {
    let mut found = BTreeMap::new();
    for (name, e) in &set.vms {
        let Some(rel) = e
            .object
            .spec
            .domain
            .as_ref()
            .and_then(|d| d.xml_file.as_ref())
        else {
            continue;
        };
        let path = resolve_relative(&set.files[e.origin.file].path, rel);
        match source.read(&path).map(String::from_utf8) {
            Ok(Ok(xml)) if !xml.trim().is_empty() => {
                found.insert(name.clone(), Arc::from(xml));
            }
            Ok(Ok(_)) => diags.push(
                Diagnostic::error(
                    "domain-xml",
                    e.origin.at("spec.domain.xmlFile"),
                    format!("domain XML file {} is empty", path.display()),
                )
                .hint("put the libvirt domain XML in it, or describe the domain in the manifest"),
            ),
            Ok(Err(_)) => diags.push(Diagnostic::error(
                "domain-xml",
                e.origin.at("spec.domain.xmlFile"),
                format!("domain XML file {} is not UTF-8 text", path.display()),
            )),
            Err(err) => diags.push(
                Diagnostic::error(
                    "domain-xml",
                    e.origin.at("spec.domain.xmlFile"),
                    format!("cannot read domain XML file {}: {err}", path.display()),
                )
                .hint("the path is relative to the manifest's own file"),
            ),
        }
    }
    for (name, e) in &set.vms {
        if let Some(xml) = e.object.spec.domain.as_ref().and_then(|d| d.xml.as_ref()) {
            found.insert(name.clone(), Arc::from(xml.as_str()));
        }
    }
    set.domain_xml = found;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_near_misses_only() {
        let kinds = ["Cluster", "Node", "VirtualMachine"];
        assert_eq!(did_you_mean("Nodes", kinds.into_iter()), Some("Node"));
        assert_eq!(
            did_you_mean("virtualmachine", kinds.into_iter()),
            Some("VirtualMachine")
        );
        assert_eq!(did_you_mean("Banana", kinds.into_iter()), None);
        // The first of equally close candidates wins.
        assert_eq!(did_you_mean("hv3", ["hv1", "hv2"].into_iter()), Some("hv1"));
        assert_eq!(
            did_you_mean("ipmi-hv22", ["ipmi-hv1", "ipmi-hv2"].into_iter()),
            Some("ipmi-hv2")
        );
        assert_eq!(did_you_mean("", ["a"].into_iter()), Some("a"));
        assert_eq!(
            did_you_mean(
                "prefered",
                ["allowed", "preferred", "antiAffinity"].into_iter()
            ),
            Some("preferred")
        );
    }
}
