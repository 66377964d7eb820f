//! Property tests: whatever the bytes, loading and validating manifests returns (it never
//! panics and never hangs), every diagnostic it renders points inside the file it names, and
//! an input that is not a valid manifest set is never accepted silently.
//!
//! Three kinds of input: (a) arbitrary bytes and text, (b) YAML built from a recursive
//! strategy, with the keys and values of manifests as well as implausible ones, and (c) the
//! reference repository `manifests/` with a few lines deleted, duplicated, re-indented or
//! swapped, or a file cut short. Inputs go through an in-memory [`Source`].
//!
//! Whether an input is valid is judged independently of Rampart, as far as that is simple: a
//! file that serde_yaml cannot parse, a file without a manifest, or a document that lacks the
//! `apiVersion`/`kind`/`metadata`/`spec` envelope must produce an error; a mutation that leaves
//! the parsed documents unchanged must produce nothing new; and an input accepted without errors
//! must have every one of its documents loaded as an object (nothing dropped silently).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use rampart::manifest::{self, Report, Severity, API_VERSION};
use rampart::model::Desired;
use rampart::source::{RawFile, Source};
use serde::Deserialize;

const CASES: u32 = 256;
/// A single small input taking longer than this is a hang, even in a debug build.
const TIME_LIMIT: Duration = Duration::from_secs(20);

const KINDS: [&str; 6] = [
    "Cluster",
    "Node",
    "FenceDevice",
    "Volume",
    "VirtualMachine",
    "VirtualIP",
];

// ------------------------------------------------------------------------------------------
// An in-memory source.

#[derive(Debug, Clone, Default)]
struct Mem {
    /// Manifest files, in order.
    manifests: Vec<(PathBuf, Vec<u8>)>,
    /// Other files manifests may name (domain XML).
    aux: BTreeMap<PathBuf, Vec<u8>>,
}

impl Source for Mem {
    fn manifest_files(&self) -> Vec<RawFile> {
        self.manifests
            .iter()
            .map(|(p, b)| RawFile {
                path: p.clone(),
                content: Ok(b.clone()),
            })
            .collect()
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>, String> {
        self.aux
            .get(path)
            .or_else(|| {
                self.manifests
                    .iter()
                    .find(|(p, _)| p == path)
                    .map(|(_, b)| b)
            })
            .cloned()
            .ok_or_else(|| "no such file".to_string())
    }
}

fn mem(files: Vec<(String, Vec<u8>)>) -> Mem {
    Mem {
        manifests: files
            .into_iter()
            .map(|(p, b)| (PathBuf::from(p), b))
            .collect(),
        aux: BTreeMap::new(),
    }
}

// ------------------------------------------------------------------------------------------
// Running the checker and the properties every run must have.

/// Load, validate and render, on another thread so that a hang fails the test instead of
/// stalling it. A panic on that thread is re-raised here. Loading goes through
/// `Desired::load`, which also builds the desired state before validation has judged the
/// set; it must agree with `manifest::check` and with `Desired::from_report`.
fn check(source: Mem) -> (Report, Vec<manifest::Rendered>) {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let (report, desired) = Desired::load(&source);
        let checked = manifest::check(&source);
        assert_eq!(
            format!("{:?}", report.diagnostics),
            format!("{:?}", checked.diagnostics),
            "Desired::load and manifest::check disagree"
        );
        assert_eq!(
            desired.is_ok(),
            !report.has_errors(),
            "a desired state must come with a valid set, and only with one"
        );
        assert_eq!(
            desired.ok().map(|d| format!("{d:?}")),
            Desired::from_report(&checked)
                .ok()
                .map(|d| format!("{d:?}")),
            "Desired::load and Desired::from_report disagree"
        );
        let rendered = report.rendered();
        for r in &rendered {
            let _ = r.to_text();
        }
        let _ = tx.send((report, rendered));
    });
    match rx.recv_timeout(TIME_LIMIT) {
        Ok(out) => {
            worker.join().unwrap();
            out
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("the checker thread ended without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("loading and validating did not return within {TIME_LIMIT:?}")
        }
    }
}

/// Line breaks as any YAML parser may count them (YAML 1.1 also breaks at NEL, LS and PS).
fn line_count(bytes: &[u8]) -> usize {
    let text = String::from_utf8_lossy(bytes);
    let mut n = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => n += 1,
            '\r' if chars.peek() != Some(&'\n') => n += 1,
            _ => {}
        }
    }
    n
}

/// Every diagnostic names a file of the input (or none), and a line and column inside it.
fn assert_well_formed(source: &Mem, report: &Report, rendered: &[manifest::Rendered]) {
    assert_eq!(
        report.set.files.len(),
        source.manifests.len(),
        "every manifest file is kept, readable or not"
    );
    for r in rendered {
        let text = r.to_text();
        assert!(!r.message.is_empty(), "empty message: {text}");
        assert_eq!(
            r.line.is_some(),
            r.column.is_some(),
            "line without column: {text}"
        );
        let Some(file) = &r.file else {
            assert!(r.line.is_none(), "a position without a file: {text}");
            continue;
        };
        let (_, bytes) = source
            .manifests
            .iter()
            .find(|(p, _)| p == file)
            .unwrap_or_else(|| panic!("diagnostic names a file not in the input: {text}"));
        assert!(text.starts_with(&file.display().to_string()), "{text}");
        if let (Some(line), Some(column)) = (r.line, r.column) {
            assert!(line >= 1 && column >= 1, "position below 1:1: {text}");
            let lines = line_count(bytes);
            assert!(
                line <= lines,
                "line {line} is past the end of {} ({lines} lines): {text}",
                file.display()
            );
            // The column too, where both parsers agree on what a line is (YAML 1.1 also breaks
            // lines at NEL, LS and PS; YAML 1.2 does not).
            let content = String::from_utf8_lossy(bytes);
            if !content.contains(['\r', '\u{85}', '\u{2028}', '\u{2029}']) {
                let width = content
                    .split('\n')
                    .nth(line - 1)
                    .map_or(0, |l| l.chars().count());
                assert!(
                    column <= width + 1,
                    "column {column} is past the end of line {line} ({width} characters): {text}"
                );
            }
        }
    }
}

/// What can be told about validity without Rampart: `Some(reason)` when the input is
/// certainly invalid, and the number of documents that are not empty.
fn oracle(source: &Mem) -> (Option<String>, usize) {
    let mut invalid = None;
    let mut docs = 0;
    for (path, bytes) in &source.manifests {
        let mut note = |why: String| {
            invalid.get_or_insert(format!("{}: {why}", path.display()));
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            note("not UTF-8".into());
            continue;
        };
        // A byte order mark is not part of the text (libyaml trips over it; Rampart drops it).
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut values = Vec::new();
        for de in serde_yaml::Deserializer::from_str(text) {
            match serde_yaml::Value::deserialize(de) {
                Ok(v) => values.push(v),
                Err(e) => {
                    note(format!("serde_yaml: {e}"));
                    break;
                }
            }
        }
        let values: Vec<_> = values.into_iter().filter(|v| !v.is_null()).collect();
        if values.is_empty() {
            note("no document".into());
        }
        docs += values.len();
        for v in &values {
            if let Some(why) = envelope_problem(v) {
                note(why);
            }
        }
    }
    (invalid, docs)
}

fn envelope_problem(v: &serde_yaml::Value) -> Option<String> {
    let Some(map) = v.as_mapping() else {
        return Some("a document is not a mapping".into());
    };
    let mut keys: Vec<&str> = Vec::new();
    for k in map.keys() {
        match k.as_str() {
            Some(k) => keys.push(k),
            None => return Some("a top-level key is not a string".into()),
        }
    }
    keys.sort_unstable();
    if keys != ["apiVersion", "kind", "metadata", "spec"] {
        return Some(format!("top-level keys are {keys:?}"));
    }
    if map.get("apiVersion").and_then(|v| v.as_str()) != Some(API_VERSION) {
        return Some("wrong apiVersion".into());
    }
    let kind = map.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    if !KINDS.contains(&kind) {
        return Some(format!("unknown kind {kind:?}"));
    }
    match map.get("metadata").and_then(|m| m.as_mapping()) {
        Some(m) if m.get("name").is_some_and(|n| n.is_string()) => None,
        _ => Some("metadata has no string `name`".into()),
    }
}

/// The checks of every property: well-formed diagnostics, an error for a certainly invalid
/// input, and no silently dropped document in an accepted one.
fn assert_judged(source: &Mem, report: &Report, rendered: &[manifest::Rendered]) {
    assert_well_formed(source, report, rendered);
    let (invalid, docs) = oracle(source);
    let errors = rendered.iter().any(|r| r.severity == Severity::Error);
    assert_eq!(errors, report.has_errors());
    if let Some(why) = invalid {
        assert!(errors, "accepted an invalid input ({why})");
    }
    if !errors {
        assert_eq!(
            report.set.object_count(),
            docs,
            "accepted without errors, but {} of {docs} documents became objects",
            report.set.object_count()
        );
    }
}

/// `PROPTEST_CASES=N` runs more (or fewer) cases than the default [`CASES`].
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------------------------------------------
// (a) Arbitrary bytes and text.

/// Characters that mean something to YAML, or to a reader of positions.
const NASTY: &[&str] = &[
    ": ",
    "- ",
    "-",
    "? ",
    "#",
    "&a ",
    "*a",
    "!!str ",
    "!x ",
    "'",
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    "|",
    ">",
    "%YAML 1.2\n",
    "---",
    "...",
    "\t",
    "\r",
    "\r\n",
    "\n",
    "\n  ",
    "\u{85}",
    "\u{2028}",
    "\u{feff}",
    "\0",
    "\\",
    "<<: ",
    "@",
    "`",
    "é",
    "💥",
    "apiVersion: ",
    "kind: ",
    "spec:",
];

fn text_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(NASTY).prop_map(str::to_string),
            2 => "[a-zA-Z0-9 ]{0,6}",
            1 => any::<char>().prop_map(String::from),
        ],
        0..64,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes(files in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..512), 1..4)) {
        let source = mem(files.into_iter().enumerate().map(|(i, b)| (format!("f{i}.yaml"), b)).collect());
        let (report, rendered) = check(source.clone());
        assert_judged(&source, &report, &rendered);
    }

    #[test]
    fn arbitrary_text(files in prop::collection::vec(text_soup(), 1..4)) {
        let source = mem(files.into_iter().enumerate().map(|(i, t)| (format!("f{i}.yaml"), t.into_bytes())).collect());
        let (report, rendered) = check(source.clone());
        assert_judged(&source, &report, &rendered);
    }
}

// ------------------------------------------------------------------------------------------
// (b) YAML from a recursive strategy.

#[derive(Debug, Clone, Copy)]
enum Quote {
    /// Plain when that is safe, else double-quoted.
    Auto,
    Single,
    Double,
    /// Written as is, whatever it contains: may well break the YAML.
    Raw,
}

#[derive(Debug, Clone)]
enum Y {
    Scalar(String, Quote),
    Seq(Vec<Y>, bool),
    Map(Vec<(String, Y)>, bool),
}

const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "name",
    "labels",
    "annotations",
    "timing",
    "leaseTTL",
    "renewInterval",
    "fenceTimeout",
    "fencing",
    "maintenance",
    "failback",
    "role",
    "addresses",
    "management",
    "replication",
    "capacity",
    "cpus",
    "memory",
    "devices",
    "device",
    "plug",
    "watchdog",
    "timeout",
    "storeMember",
    "libvirtURI",
    "agent",
    "redfish",
    "parameters",
    "credentials",
    "password",
    "file",
    "env",
    "endpoint",
    "username",
    "runsOn",
    "drbd",
    "local",
    "shared",
    "minor",
    "port",
    "replicas",
    "node",
    "disk",
    "nodes",
    "path",
    "volumes",
    "volume",
    "target",
    "interfaces",
    "bridge",
    "mac",
    "domain",
    "xml",
    "xmlFile",
    "placement",
    "allowed",
    "preferred",
    "antiAffinity",
    "failover",
    "address",
    "interface",
    "gateway",
    "follows",
    "virtualMachine",
    "nodeSelector",
    "arp",
    "count",
    "interval",
    "<<",
    "",
];

const VALUES: &[&str] = &[
    "rampart.dev/v1alpha1",
    "v1",
    "Cluster",
    "Node",
    "FenceDevice",
    "Volume",
    "VirtualMachine",
    "VirtualIP",
    "Pod",
    "hv1",
    "hv2",
    "witness",
    "Hv1",
    "-bad-",
    "hypervisor",
    "web",
    "db",
    "ipmi-hv1",
    "10s",
    "2s",
    "0s",
    "10",
    "1h 30m",
    "4GiB",
    "512MiB",
    "4096",
    "4GB",
    "0",
    "-1",
    "65536",
    "99999999999999999999",
    "1.5",
    "true",
    "false",
    "null",
    "~",
    "",
    "yes",
    "192.0.2.11",
    "192.0.2.100/24",
    "192.0.2.0/24",
    "2001:db8::1/64",
    "300.1.1.1/33",
    "fence_ipmilan",
    "http://bmc",
    "https://bmc",
    "/dev/vg0/web",
    "relative/path",
    "br0",
    "52:54:00:12:34:56",
    "zz:zz",
    "disabled",
    "required",
    "kvm",
    "xen",
    "live",
    "C",
    "Z",
    "internal",
    "a: b",
    "- x",
    "#not",
    "&anchor",
    "*alias",
    "!tag",
    "'",
    "\"",
    "{",
    "[",
    "\t",
    "é",
    "\u{85}",
    "\u{feff}",
];

fn scalar() -> impl Strategy<Value = Y> {
    let text = prop_oneof![
        6 => prop::sample::select(VALUES).prop_map(str::to_string),
        1 => "[a-z0-9-]{0,10}",
        1 => "\\PC{0,8}",
    ];
    let quote = prop_oneof![
        8 => Just(Quote::Auto),
        1 => Just(Quote::Single),
        1 => Just(Quote::Double),
        1 => Just(Quote::Raw),
    ];
    (text, quote).prop_map(|(t, q)| Y::Scalar(t, q))
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-zA-Z]{1,8}",
        1 => "\\PC{1,4}",
    ]
}

fn value() -> impl Strategy<Value = Y> {
    scalar().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            (
                prop::collection::vec(inner.clone(), 0..5),
                prop::bool::weighted(0.2)
            )
                .prop_map(|(v, flow)| Y::Seq(v, flow)),
            (
                prop::collection::vec((key(), inner), 0..6),
                prop::bool::weighted(0.2)
            )
                .prop_map(|(v, flow)| Y::Map(v, flow)),
        ]
    })
}

/// A document that looks like a manifest: the envelope is mostly right, the spec is anything.
fn manifest_doc() -> impl Strategy<Value = Y> {
    let api = prop_oneof![
        8 => Just(API_VERSION.to_string()),
        1 => Just("rampart.dev/v1".to_string()),
        1 => "[a-z./0-9]{0,12}",
    ];
    let kind = prop_oneof![
        8 => prop::sample::select(&KINDS[..]).prop_map(str::to_string),
        1 => prop::sample::select(&["Nodes", "virtualmachine", "", "Deployment"][..]).prop_map(str::to_string),
    ];
    let name = prop_oneof![
        6 => prop::sample::select(&["hv1", "hv2", "witness", "web", "db", "ipmi-hv1", "lab"][..]).prop_map(str::to_string),
        1 => "[a-zA-Z0-9-]{0,12}",
    ];
    let spec = prop::collection::vec((key(), value()), 0..6).prop_map(|v| Y::Map(v, false));
    let extra = prop::option::weighted(0.1, (key(), value()));
    (api, kind, name, spec, extra).prop_map(|(api, kind, name, spec, extra)| {
        let s = |t: String| Y::Scalar(t, Quote::Auto);
        let mut entries = vec![
            ("apiVersion".to_string(), s(api)),
            ("kind".to_string(), s(kind)),
            (
                "metadata".to_string(),
                Y::Map(vec![("name".to_string(), s(name))], false),
            ),
            ("spec".to_string(), spec),
        ];
        entries.extend(extra);
        Y::Map(entries, false)
    })
}

fn document() -> impl Strategy<Value = Y> {
    prop_oneof![4 => manifest_doc(), 1 => value()]
}

/// A plain scalar that reads back as itself (or as a number, boolean or null, which is fine).
fn plain_ok(s: &str, flow: bool) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphanumeric() || "_./".contains(first))
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./ -".contains(c) || (c == ':' && !flow))
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn scalar_text(s: &str, q: Quote, flow: bool) -> String {
    match q {
        Quote::Auto if plain_ok(s, flow) => s.to_string(),
        Quote::Auto | Quote::Double => double_quoted(s),
        Quote::Single if s.chars().all(|c| !c.is_control() && c != '\u{feff}') => {
            format!("'{}'", s.replace('\'', "''"))
        }
        Quote::Single => double_quoted(s),
        Quote::Raw => s.to_string(),
    }
}

fn flow_text(y: &Y) -> String {
    match y {
        Y::Scalar(s, q) => scalar_text(s, *q, true),
        Y::Seq(items, _) => format!(
            "[{}]",
            items.iter().map(flow_text).collect::<Vec<_>>().join(", ")
        ),
        Y::Map(entries, _) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", scalar_text(k, Quote::Auto, true), flow_text(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Is `y` written on the line of its key (scalar, flow or empty collection)?
fn inline(y: &Y) -> bool {
    match y {
        Y::Scalar(..) => true,
        Y::Seq(v, flow) => *flow || v.is_empty(),
        Y::Map(v, flow) => *flow || v.is_empty(),
    }
}

/// Block-style YAML for `y`, indented by `indent` spaces; ends with a newline.
fn block_text(y: &Y, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match y {
        _ if inline(y) => {
            out.push_str(&pad);
            out.push_str(&flow_text(y));
            out.push('\n');
        }
        Y::Map(entries, _) => {
            for (k, v) in entries {
                out.push_str(&format!("{pad}{}:", scalar_text(k, Quote::Auto, false)));
                if inline(v) {
                    out.push_str(&format!(" {}\n", flow_text(v)));
                } else {
                    out.push('\n');
                    block_text(v, indent + 2, out);
                }
            }
        }
        Y::Seq(items, _) => {
            for item in items {
                if inline(item) {
                    out.push_str(&format!("{pad}- {}\n", flow_text(item)));
                } else {
                    // The item's first line goes after the dash.
                    let mut inner = String::new();
                    block_text(item, indent + 2, &mut inner);
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&inner[indent + 2..]);
                }
            }
        }
        Y::Scalar(..) => unreachable!("scalars are inline"),
    }
}

fn file_text(docs: &[Y], explicit_start: bool) -> String {
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 || explicit_start {
            out.push_str("---\n");
        }
        block_text(d, 0, &mut out);
    }
    out
}

/// A few documents of the reference repository, so that generated ones meet real objects.
fn reference_docs() -> Vec<String> {
    let mut docs = Vec::new();
    for (_, bytes) in &reference().manifests {
        let text = String::from_utf8(bytes.clone()).unwrap();
        docs.extend(
            text.split("\n---\n")
                .map(|d| d.trim_start_matches("---\n").to_string()),
        );
    }
    docs
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_yaml(
        files in prop::collection::vec((prop::collection::vec(document(), 0..4), any::<bool>()), 1..4),
        real in prop::collection::vec(any::<Index>(), 0..6),
    ) {
        let mut named: Vec<(String, Vec<u8>)> = files
            .iter()
            .enumerate()
            .map(|(i, (docs, start))| (format!("gen{i}.yaml"), file_text(docs, *start).into_bytes()))
            .collect();
        if !real.is_empty() {
            let pool = reference_docs();
            let picked: Vec<&str> = real.iter().map(|i| pool[i.index(pool.len())].as_str()).collect();
            named.push(("real.yaml".into(), picked.join("\n---\n").into_bytes()));
        }
        let source = mem(named);
        let (report, rendered) = check(source.clone());
        assert_judged(&source, &report, &rendered);
    }
}

#[test]
fn the_yaml_generator_writes_what_it_means() {
    // Auto-quoted and block-rendered values must read back as the same tree.
    let y = Y::Map(
        vec![
            (
                "a".into(),
                Y::Seq(
                    vec![
                        Y::Scalar("x: y".into(), Quote::Auto),
                        Y::Map(
                            vec![("k".into(), Y::Scalar("é\t'".into(), Quote::Single))],
                            false,
                        ),
                    ],
                    false,
                ),
            ),
            (
                "b".into(),
                Y::Map(
                    vec![
                        ("c".into(), Y::Seq(vec![], false)),
                        ("d".into(), Y::Scalar("52:54:00".into(), Quote::Auto)),
                    ],
                    false,
                ),
            ),
            (
                "e".into(),
                Y::Seq(
                    vec![Y::Seq(vec![Y::Scalar("1".into(), Quote::Auto)], false)],
                    false,
                ),
            ),
        ],
        false,
    );
    let text = file_text(&[y], false);
    let v: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let expected: serde_yaml::Value =
        serde_yaml::from_str("a: ['x: y', {k: \"é\\t'\"}]\nb: {c: [], d: '52:54:00'}\ne: [[1]]\n")
            .unwrap();
    assert_eq!(v, expected, "{text}");
}

// ------------------------------------------------------------------------------------------
// (c) Mutations of the reference repository.

/// `manifests/`, read once: manifest files in the order the directory source lists them, and
/// the domain XML they name.
fn reference() -> &'static Mem {
    static REFERENCE: std::sync::OnceLock<Mem> = std::sync::OnceLock::new();
    REFERENCE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
        let mut m = Mem::default();
        for raw in rampart::source::fs::Paths::new([&root]).manifest_files() {
            let rel = raw.path.strip_prefix(&root).unwrap().to_path_buf();
            m.manifests
                .push((rel, raw.content.expect("readable reference manifest")));
        }
        for e in walkdir::WalkDir::new(&root) {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy();
            if e.file_type().is_file() && !rampart::source::is_manifest_name(&name) {
                let rel = e.path().strip_prefix(&root).unwrap().to_path_buf();
                m.aux.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
        assert!(
            m.manifests.len() >= 5,
            "manifests/ holds the reference repository"
        );
        m
    })
}

/// What validation says about a set, positions aside: layout changes move positions only.
fn findings(rendered: &[manifest::Rendered]) -> Vec<String> {
    let mut out: Vec<String> = rendered
        .iter()
        .map(|r| format!("{:?} {} {} {:?}", r.severity, r.code, r.message, r.hint))
        .collect();
    out.sort();
    out
}

/// The reference repository's own findings (warnings at most).
fn reference_findings() -> &'static [String] {
    static FINDINGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    FINDINGS.get_or_init(|| {
        let (report, rendered) = check(reference().clone());
        let text: Vec<String> = rendered.iter().map(|r| r.to_text()).collect();
        assert!(
            !report.has_errors(),
            "manifests/ is invalid:\n{}",
            text.join("\n")
        );
        assert!(report.set.object_count() > 10);
        findings(&rendered)
    })
}

#[test]
fn the_reference_repository_is_valid_in_memory() {
    reference_findings();
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(Index),
    DuplicateLine(Index),
    /// Add (positive) or remove (negative) leading spaces.
    Indent(Index, i8),
    /// Replace the line's first leading space by a tab.
    TabIndent(Index),
    SwapLines(Index, Index),
    InsertText(Index, Index, &'static str),
    /// Cut the file at a byte offset.
    Truncate(Index),
    /// Start the file with a byte order mark, as some Windows editors do.
    ByteOrderMark,
    /// End every line with CR LF.
    Crlf,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => any::<Index>().prop_map(Mutation::DeleteLine),
        3 => any::<Index>().prop_map(Mutation::DuplicateLine),
        3 => (any::<Index>(), prop_oneof![-4i8..=-1, 1i8..=4]).prop_map(|(i, d)| Mutation::Indent(i, d)),
        1 => any::<Index>().prop_map(Mutation::TabIndent),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        2 => (any::<Index>(), any::<Index>(), prop::sample::select(NASTY)).prop_map(|(l, c, t)| Mutation::InsertText(l, c, t)),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        1 => Just(Mutation::ByteOrderMark),
        1 => Just(Mutation::Crlf),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    if lines.is_empty() {
        return String::new();
    }
    let n = lines.len();
    match m {
        Mutation::DeleteLine(i) => {
            lines.remove(i.index(n));
        }
        Mutation::DuplicateLine(i) => {
            let i = i.index(n);
            lines.insert(i, lines[i].clone());
        }
        Mutation::Indent(i, d) => {
            let l = &mut lines[i.index(n)];
            if *d > 0 {
                l.insert_str(0, &" ".repeat(*d as usize));
            } else {
                let spaces = l.len() - l.trim_start_matches(' ').len();
                l.drain(..spaces.min(d.unsigned_abs() as usize));
            }
        }
        Mutation::TabIndent(i) => {
            let l = &mut lines[i.index(n)];
            if l.starts_with(' ') {
                l.replace_range(0..1, "\t");
            } else {
                l.insert(0, '\t');
            }
        }
        Mutation::SwapLines(a, b) => lines.swap(a.index(n), b.index(n)),
        Mutation::InsertText(l, c, t) => {
            let l = &mut lines[l.index(n)];
            let at = c.index(l.len() + 1);
            let at = (0..=at).rev().find(|&i| l.is_char_boundary(i)).unwrap_or(0);
            l.insert_str(at, t);
        }
        Mutation::ByteOrderMark => return format!("\u{feff}{text}"),
        Mutation::Crlf => return text.replace("\r\n", "\n").replace('\n', "\r\n"),
        Mutation::Truncate(i) => {
            let whole = lines.concat();
            let at = i.index(whole.len() + 1);
            let at = (0..=at)
                .rev()
                .find(|&i| whole.is_char_boundary(i))
                .unwrap_or(0);
            return whole[..at].to_string();
        }
    }
    lines.concat()
}

fn documents(text: &str) -> Option<Vec<serde_yaml::Value>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(de).ok()?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Some(out)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_reference(file in any::<Index>(), mutations in prop::collection::vec(mutation(), 1..4)) {
        let mut source = reference().clone();
        let f = file.index(source.manifests.len());
        let original = String::from_utf8(source.manifests[f].1.clone()).unwrap();
        let mut text = original.clone();
        for m in &mutations {
            text = apply(&text, m);
        }
        source.manifests[f].1 = text.clone().into_bytes();
        let (report, rendered) = check(source.clone());
        assert_judged(&source, &report, &rendered);
        if documents(&text).is_some() && documents(&text) == documents(&original) {
            // Only comments, blank lines or layout changed: still valid, with nothing new to say.
            let said: Vec<String> = rendered.iter().map(|r| r.to_text()).collect();
            prop_assert!(
                findings(&rendered) == reference_findings(),
                "unchanged documents, yet:\n{}\n--- mutated file:\n{text}",
                said.join("\n")
            );
        }
    }
}

#[test]
fn a_source_without_manifest_files_is_an_error_not_a_panic() {
    let (report, rendered) = check(mem(Vec::new()));
    assert!(report.has_errors());
    assert!(
        rendered.iter().any(|r| r.code == "no-manifests"),
        "{rendered:?}"
    );
    assert!(Desired::load(&mem(Vec::new())).1.is_err());
}
