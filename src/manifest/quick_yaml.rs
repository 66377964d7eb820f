//! A fast path for the plain block style manifests are written in.
//!
//! serde_yaml (libyaml) is exact but slow: parsing is most of the time `rampart simulate` or
//! `validate` spends on a large repository. Manifests use a small part of YAML: block mappings
//! and sequences, one-line flow sequences, plain and quoted one-line scalars, comments and
//! `---` between documents. [`parse`] reads exactly that part, straight into the
//! [`serde_yaml::Value`]s serde_yaml would give, and declines everything else: anchors, tags,
//! block scalars (`|`, `>`), multi-line scalars, flow mappings, escapes, tabs, non-ASCII text,
//! duplicate keys, empty documents, and any indentation it does not recognise. A declined
//! file goes to serde_yaml whole, so the result, and every diagnostic, are serde_yaml's.
//!
//! The rule this module keeps: when it returns documents, serde_yaml parses the same text
//! without error into equal documents. Its tests check that over generated text, over the
//! reference and example manifests, and over generated repositories.
//!
//! Scalars are resolved as serde_yaml resolves them (`visit_untagged_scalar` in its `de.rs`):
//! `null`/`~`, the booleans, decimal integers without a leading zero, floats, else strings. Where
//! the rule is more involved (signs, `0x`/`0o`/`0b`, leading dots), the file is declined.

use serde_yaml::{Mapping, Number, Value};

/// Nesting deeper than this is declined; serde_yaml's own limit is 128.
const MAX_DEPTH: usize = 64;
/// libyaml refuses an implicit key longer than 1024 characters.
const MAX_KEY: usize = 1000;

/// The documents of `text`, or `None` when the text is not in the subset this module reads
/// (serde_yaml must then parse it).
pub fn parse(text: &str) -> Option<Vec<Value>> {
    // Tabs, carriage returns, control characters and non-ASCII text (where libyaml has
    // further line breaks and rules of its own) are left to serde_yaml.
    if text.bytes().any(|b| (b < 0x20 && b != b'\n') || b >= 0x7f) {
        return None;
    }
    let mut docs = Vec::new();
    let mut lines: Vec<Line> = Vec::new();
    let mut explicit = false; // the current document began with `---`
    for raw in text.split('\n') {
        let content = raw.trim_start_matches(' ');
        let indent = raw.len() - content.len();
        if indent == 0 && is_marker(raw, b'-') {
            let rest = raw[3..].trim_start_matches(' ');
            if !(rest.is_empty() || rest.starts_with('#')) {
                return None; // content after `---`
            }
            if explicit || !lines.is_empty() {
                docs.push(document(&lines)?);
                lines.clear();
            }
            explicit = true;
            continue;
        }
        if indent == 0 && (is_marker(raw, b'.') || raw.starts_with('%')) {
            return None; // document end, directives
        }
        let content = content.trim_end_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        lines.push(Line { indent, content });
    }
    if explicit || !lines.is_empty() {
        docs.push(document(&lines)?);
    }
    if docs.is_empty() {
        return None; // serde_yaml reads an empty stream as one null document
    }
    Some(docs)
}

/// `---` or `...` at the start of a line, alone or followed by a space.
fn is_marker(raw: &str, c: u8) -> bool {
    let b = raw.as_bytes();
    b.len() >= 3 && b[..3].iter().all(|&x| x == c) && (b.len() == 3 || b[3] == b' ')
}

/// A line with content: its indentation, and its text without the indentation and trailing
/// spaces (comments still on it).
#[derive(Clone, Copy)]
struct Line<'a> {
    indent: usize,
    content: &'a str,
}

fn document(lines: &[Line]) -> Option<Value> {
    let first = lines.first()?; // an empty document: declined
    let mut p = Parser { lines, pos: 0 };
    let v = p.node(*first, 0)?;
    (p.pos == lines.len()).then_some(v)
}

struct Parser<'a, 'l> {
    lines: &'l [Line<'a>],
    /// The next line not yet read.
    pos: usize,
}

impl<'a> Parser<'a, '_> {
    fn peek(&self) -> Option<Line<'a>> {
        self.lines.get(self.pos).copied()
    }

    /// The block node that begins with `line` (the line at `self.pos`, or the rest of a
    /// sequence entry's line, indented to where that rest starts).
    fn node(&mut self, line: Line<'a>, depth: usize) -> Option<Value> {
        if is_entry(line.content) {
            self.sequence(line, depth)
        } else if split_key(line.content)?.is_some() {
            self.mapping(line, depth)
        } else {
            None // a scalar as a block node may go on over lines: left to serde_yaml
        }
    }

    /// The entries of a block collection at `first.indent`, `first` the line of the first:
    /// each read by `entry` once `self.pos` is past its line. The collection goes on while
    /// the next line is at its indentation and of its kind (an entry of a sequence, `-`, or
    /// of a mapping, a key); a deeper line after an entry is declined.
    fn block(
        &mut self,
        first: Line<'a>,
        depth: usize,
        sequence: bool,
        mut entry: impl FnMut(&mut Self, Line<'a>) -> Option<()>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mut line = first;
        loop {
            self.pos += 1; // past the entry's line
            entry(self, line)?;
            match self.peek() {
                Some(next) if next.indent == line.indent && is_entry(next.content) == sequence => {
                    line = next
                }
                Some(next) if next.indent > line.indent => return None,
                _ => return Some(()),
            }
        }
    }

    /// A block sequence whose first entry is `first`, at `first.indent`.
    fn sequence(&mut self, first: Line<'a>, depth: usize) -> Option<Value> {
        let mut items = Vec::new();
        self.block(first, depth, true, |p, line| {
            let rest = &line.content[1..];
            let after = rest.trim_start_matches(' ');
            if !rest.is_empty() && !rest.starts_with(' ') {
                return None; // `-x` is a scalar, not an entry
            }
            let starts_node = !after.is_empty()
                && !after.starts_with('#')
                && (is_entry(after) || split_key(after)?.is_some());
            let item = if starts_node {
                // `- - a` or `- key: value`: a block node starting on this line.
                let inner = Line {
                    indent: line.indent + 1 + (rest.len() - after.len()),
                    content: after,
                };
                p.pos -= 1;
                p.node_inline(inner, depth + 1)?
            } else {
                p.value(after, line.indent, depth, false)?
            };
            items.push(item);
            Some(())
        })?;
        Some(Value::Sequence(items))
    }

    /// The value after `key:` or `-` at `indent`: `text`, the rest of the line, or when that
    /// is empty the block node on the lines below, deeper (or, after a key when `indentless`,
    /// a sequence at the key's own indentation); null when there is none.
    fn value(
        &mut self,
        text: &str,
        indent: usize,
        depth: usize,
        indentless: bool,
    ) -> Option<Value> {
        if text.is_empty() || text.starts_with('#') {
            return Some(match self.peek() {
                Some(next) if next.indent > indent => self.node(next, depth + 1)?,
                Some(next) if indentless && next.indent == indent && is_entry(next.content) => {
                    self.sequence(next, depth + 1)?
                }
                _ => Value::Null,
            });
        }
        let v = inline(text)?;
        if self.peek().is_some_and(|n| n.indent > indent) {
            return None; // a scalar going on over lines, or an error
        }
        Some(v)
    }

    /// A block node that starts within the line at `self.pos` (after `- `), with `inner` its
    /// remainder. Lines after it continue it at `inner.indent`.
    fn node_inline(&mut self, inner: Line<'a>, depth: usize) -> Option<Value> {
        if is_entry(inner.content) {
            self.sequence(inner, depth)
        } else {
            self.mapping(inner, depth)
        }
    }

    /// A block mapping whose first entry is `first`, at `first.indent`.
    fn mapping(&mut self, first: Line<'a>, depth: usize) -> Option<Value> {
        let mut map = Mapping::new();
        self.block(first, depth, false, |p, line| {
            let (key, rest) = split_key(line.content)?.filter(|(k, _)| k.len() <= MAX_KEY)?;
            let key = match resolve(key)? {
                Value::String(s) => Value::String(s),
                _ => return None, // `true:`, `null:`, `1:` are not string keys
            };
            let value = p.value(rest, line.indent, depth, true)?;
            // A duplicate key: serde_yaml's error, with its position.
            map.insert(key, value).is_none().then_some(())
        })?;
        Some(Value::Mapping(map))
    }
}

/// A block sequence entry: `-` alone or followed by a space.
fn is_entry(content: &str) -> bool {
    let b = content.as_bytes();
    b.first() == Some(&b'-') && (b.len() == 1 || b[1] == b' ')
}

/// Whether a line is a mapping entry. `Some(Some((key, rest)))` for `key: rest` or `key:` with
/// a plain key of letters, digits and `_.-/` that starts with a letter, `rest` without its
/// leading spaces; `Some(None)` when the line is no mapping entry; `None` when it may be one
/// in a form this module does not read (a quoted, spaced or numeric key).
fn split_key(content: &str) -> Option<Option<(&str, &str)>> {
    let b = content.as_bytes();
    if b.first().is_some_and(u8::is_ascii_alphabetic) {
        let end = b
            .iter()
            .position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'/')))
            .unwrap_or(b.len());
        if b.get(end) == Some(&b':') {
            match b.get(end + 1) {
                None => return Some(Some((&content[..end], ""))),
                Some(b' ') => {
                    let rest = content[end + 2..].trim_start_matches(' ');
                    return Some(Some((&content[..end], rest)));
                }
                Some(_) => {} // `a:b`, a scalar so far
            }
        }
    }
    // A scalar, unless a `: ` or a final `:` before any comment makes it an entry.
    let scalar = match content.find(" #") {
        Some(i) => &content[..i],
        None => content,
    };
    if scalar.contains(": ") || scalar.trim_end_matches(' ').ends_with(':') {
        None
    } else {
        Some(None)
    }
}

/// A value on the rest of a line: a plain or quoted scalar or a one-line flow sequence,
/// possibly followed by a comment.
fn inline(text: &str) -> Option<Value> {
    let b = text.as_bytes();
    match b.first()? {
        b'"' | b'\'' => {
            let (s, rest) = quoted(text)?;
            end_of_line(rest).then_some(Value::String(s))
        }
        b'[' => {
            let close = text.find(']')?;
            if !end_of_line(&text[close + 1..]) {
                return None;
            }
            let inner = text[1..close].trim_matches(' ');
            let mut items = Vec::new();
            if !inner.is_empty() {
                for item in inner.split(',') {
                    let item = item.trim_matches(' ');
                    let v = match item.as_bytes().first()? {
                        b'"' | b'\'' => {
                            let (s, rest) = quoted(item)?;
                            if !rest.is_empty() {
                                return None;
                            }
                            Value::String(s)
                        }
                        _ => {
                            if item.contains(['[', ']', '{', '}', '#', ':', '"', '\'']) {
                                return None;
                            }
                            plain(item)?
                        }
                    };
                    items.push(v);
                }
            }
            Some(Value::Sequence(items))
        }
        b'{' => {
            let rest = text.strip_prefix("{}")?;
            end_of_line(rest).then(|| Value::Mapping(Mapping::new()))
        }
        _ => {
            // A plain scalar ends at ` #`, where a comment begins.
            let s = match text.find(" #") {
                Some(i) => text[..i].trim_end_matches(' '),
                None => text,
            };
            if s.contains(": ") || s.ends_with(':') {
                return None;
            }
            plain(s)
        }
    }
}

/// Only spaces, or spaces and a comment, after a closing quote or bracket.
fn end_of_line(rest: &str) -> bool {
    let t = rest.trim_start_matches(' ');
    t.is_empty() || (t.starts_with('#') && t.len() < rest.len())
}

/// A one-line quoted scalar at the start of `text`: its value and what follows the closing
/// quote. Double-quoted scalars with escapes are declined.
fn quoted(text: &str) -> Option<(String, &str)> {
    let q = text.as_bytes()[0];
    let body = &text[1..];
    if q == b'"' {
        let close = body.find(['"', '\\'])?;
        if body.as_bytes()[close] == b'\\' {
            return None;
        }
        return Some((body[..close].to_string(), &body[close + 1..]));
    }
    // Single quotes: `''` is a quote.
    let mut out = String::new();
    let mut rest = body;
    loop {
        let i = rest.find('\'')?;
        out.push_str(&rest[..i]);
        if rest.as_bytes().get(i + 1) == Some(&b'\'') {
            out.push('\'');
            rest = &rest[i + 2..];
        } else {
            return Some((out, &rest[i + 1..]));
        }
    }
}

/// A plain scalar that may start a value: not empty, not starting with an indicator (a `-`
/// before a digit is a sign).
fn plain(s: &str) -> Option<Value> {
    let b = s.as_bytes();
    let first = *b.first()?;
    let signed = first == b'-' && b.get(1).is_some_and(u8::is_ascii_digit);
    if !signed
        && matches!(
            first,
            b'-' | b'?'
                | b':'
                | b','
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'#'
                | b'&'
                | b'*'
                | b'!'
                | b'|'
                | b'>'
                | b'\''
                | b'"'
                | b'%'
                | b'@'
                | b'`'
        )
    {
        return None;
    }
    resolve(s)
}

/// What serde_yaml makes of a plain scalar, for the forms whose rule is simple; `None` for the
/// others. See the module documentation.
fn resolve(s: &str) -> Option<Value> {
    match s {
        "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        _ => {}
    }
    let b = s.as_bytes();
    let first = *b.first()?;
    if first.is_ascii_alphabetic() || first == b'/' || first == b'_' {
        // No integer or finite float is written so (`inf` and `nan` are not finite).
        return Some(Value::String(s.to_string()));
    }
    let negative = first == b'-';
    let digits = if negative { &b[1..] } else { b };
    if !digits.first().is_some_and(u8::is_ascii_digit) {
        return None; // `+1`, `.5`, `.inf`: left to serde_yaml
    }
    if digits.len() > 1 && digits[0] == b'0' && matches!(digits[1], b'x' | b'o' | b'b') {
        return None;
    }
    if digits.iter().all(u8::is_ascii_digit) {
        if digits.len() > 1 && digits[0] == b'0' {
            // `012` and `-012` are strings in YAML 1.2.
            return Some(Value::String(s.to_string()));
        }
        // An integer too large for u64 or i64 becomes a 128-bit integer or a float in
        // serde_yaml.
        return if negative {
            s.parse::<i64>().ok().map(|n| Value::Number(n.into()))
        } else {
            s.parse::<u64>().ok().map(|n| Value::Number(n.into()))
        };
    }
    // A digit (after a sign) then something else: never an integer (Rust's integer parsing
    // takes digits only), a float when Rust's float parsing takes it and it is finite, else a
    // string.
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => Some(Value::Number(Number::from(f))),
        Ok(_) => None,
        Err(_) => Some(Value::String(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::parse;
    use serde::Deserialize;
    use serde_yaml::Value;

    /// serde_yaml's documents, or `None` when it finds an error.
    pub(super) fn reference(text: &str) -> Option<Vec<Value>> {
        let mut out = Vec::new();
        for de in serde_yaml::Deserializer::from_str(text) {
            out.push(Value::deserialize(de).ok()?);
        }
        Some(out)
    }

    /// Documents as text: unlike `==` on serde_yaml's mappings, this tells key order apart,
    /// and integers from floats.
    pub(super) fn shown(docs: &Option<Vec<Value>>) -> String {
        format!("{docs:?}")
    }

    /// `parse` either declines `text` or agrees with serde_yaml, which must then accept it.
    fn agrees(text: &str) -> bool {
        let docs = parse(text);
        docs.is_none() || shown(&docs) == shown(&reference(text))
    }

    #[test]
    fn reads_the_manifest_style() {
        let text = "\
# a comment
apiVersion: rampart.dev/v1alpha1
kind: VirtualMachine   # trailing comment
metadata:
  name: vm1
  labels: {}
spec:
  cpus: 2
  memory: 1536MiB
  weight: 1.5
  enabled: true
  nothing:
  address: 10.1.0.1
  cidr: 172.16.17.151/12
  quoted: \"1\"
  single: 'it''s'
  zero: 012
  volumes:
    - volume: vm1-disk
      target: vda
    -   volume: vm1-data
        target: vdb
  placement:
    allowed: [hv1, 'hv2', \"hv3\"]
    none: [ ]
  indentless:
  - a
  - - b
    - c
  -
  - x: 1
---
kind: Node
";
        let docs = parse(text).expect("in the subset");
        assert_eq!(docs.len(), 2);
        assert_eq!(shown(&Some(docs)), shown(&reference(text)));
    }

    #[test]
    fn declines_what_it_does_not_read() {
        for text in [
            "",
            "# only a comment\n",
            "a: 1\n---\n",
            "---\n---\na: 1\n",
            "a: &x 1\nb: *x\n",
            "a: !tag 1\n",
            "a: |\n  text\n",
            "a: >\n  text\n",
            "a: b\n  continued\n",
            "a:\n  b\n",
            "a: {b: 1}\n",
            "a: \"esc\\n\"\n",
            "a:\tb\n",
            "a: b\r\n",
            "a: é\n",
            "a: 1\na: 2\n",
            "a: 1\n b: 2\n",
            "- a: 1\n   b: 2\n",
            "a: 1\n...\n",
            "%YAML 1.2\n---\na: 1\n",
            "\"a\": 1\n",
            "? a\n: 1\n",
            "a: +1\n",
            "a: -0x1f\n",
            "a: -99999999999999999999\n",
            "a: 0x1f\n",
            "a: .5\n",
            "a: [a, [b]]\n",
            "a: [a: b]\n",
            "a: [a,,b]\n",
            "a: 'open\n",
            "a: b: c\n",
            "true: 1\n",
            "1: a\n",
            "a: 99999999999999999999999\n",
            "a:b\n",
            "plain\n",
        ] {
            assert!(parse(text).is_none(), "{text:?} should be declined");
            assert!(agrees(text));
        }
    }

    #[test]
    fn declines_deep_nesting() {
        let deep = format!("{}x\n", "- ".repeat(super::MAX_DEPTH + 2));
        assert!(parse(&deep).is_none());
        let mut nested = String::new();
        for i in 0..super::MAX_DEPTH + 2 {
            nested.push_str(&format!("{}k:\n", " ".repeat(i)));
        }
        assert!(parse(&nested).is_none());
        let shallow = format!("{}x\n", "- ".repeat(8));
        assert!(parse(&shallow).is_some() && agrees(&shallow));
    }

    /// Scalars as written: plain words, numbers of every form, YAML's special words, and text
    /// with the characters that end or change a plain scalar.
    pub(super) const SCALARS: &[&str] = &[
        "a",
        "vm1",
        "hv0003",
        "1",
        "0",
        "012",
        "1.5",
        "1e5",
        "1.",
        "10.1.0.1",
        "172.16.0.1/12",
        "1536MiB",
        "10s",
        "10:00",
        "null",
        "~",
        "true",
        "False",
        "yes",
        "inf",
        ".inf",
        "-1",
        "-10",
        "-0",
        "-01",
        "-1.5",
        "-1x",
        "+1",
        "0x1f",
        "0o7",
        "-",
        "a b",
        "a  b",
        "a#b",
        "a #b",
        "a:b",
        "a: b",
        "a:",
        ":a",
        "[a]",
        "{}",
        "[]",
        "[ ]",
        "[a, b]",
        "[a,b,]",
        "[a, [b]]",
        "['a', \"b\"]",
        "\"q\"",
        "\"q\\n\"",
        "'it''s'",
        "'a",
        "\"a",
        "&x a",
        "*x",
        "!t a",
        "|",
        ">",
        "@a",
        "`a",
        "%a",
        "? a",
        "- a",
        "-a",
        "#",
        "# c",
        "a,b",
        "x]",
        "é",
        "\"a\" b",
        "'a'#c",
        "'a' #c",
        "[a] x",
        "[a] #c",
        "{a: 1}",
        "/dev/x",
        "_x",
        "",
        "18446744073709551616",
        "1e400",
        "-.inf",
        ".nan",
        "1e",
        "1_000",
        "abc",
        "nan",
        "Infinity",
        "Null",
        "True",
        "FALSE",
        "off",
        "18446744073709551615",
        "1,2",
        "a[0]",
        "x{y}",
        "-012",
        "-1e5",
        "-1a",
        "-10:00",
        "-9223372036854775808",
        "-9223372036854775809",
    ];

    #[test]
    fn agrees_with_serde_yaml_on_scalars() {
        for s in SCALARS {
            let text = format!("k: {s}\n");
            assert!(agrees(&text), "{text:?}");
        }
    }
}

#[cfg(test)]
mod properties {
    //! Generated text: either declined, or read exactly as serde_yaml reads it.

    use super::tests::{reference, shown, SCALARS};
    use proptest::prelude::*;

    /// A scalar of [`SCALARS`], or short random text.
    fn scalar_text() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(SCALARS.to_vec()).prop_map(str::to_string),
            "[a-z0-9 .:#/_-]{0,6}",
        ]
    }

    fn key_text() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "a", "b", "name", "spec", "cpus", "k-1", "k.x", "k/y", "true", "null", "1",
                "\"a\"", "'b'", "a b", "a:b", "? a", "-", "_k", "~",
            ])
            .prop_map(str::to_string),
            "[a-c]{1,2}",
        ]
    }

    /// One line of a YAML text: indentation and a line form.
    fn line() -> impl Strategy<Value = String> {
        let body = prop_oneof![
            (key_text(), scalar_text()).prop_map(|(k, v)| format!("{k}: {v}")),
            key_text().prop_map(|k| format!("{k}:")),
            key_text().prop_map(|k| format!("{k}:  # c")),
            scalar_text().prop_map(|v| format!("- {v}")),
            (key_text(), scalar_text()).prop_map(|(k, v)| format!("- {k}: {v}")),
            key_text().prop_map(|k| format!("- {k}:")),
            scalar_text().prop_map(|v| format!("- - {v}")),
            Just("-".to_string()),
            Just("- # c".to_string()),
            Just("# comment".to_string()),
            Just(String::new()),
            scalar_text(),
        ];
        let marker = prop::sample::select(vec!["---", "--- # c", "...", "--- a: 1", "%YAML 1.2"])
            .prop_map(str::to_string);
        prop_oneof![
            12 => (0usize..7, body).prop_map(|(i, b)| format!("{}{b}", " ".repeat(i))),
            1 => marker,
        ]
    }

    /// A line of the forms the fast path reads, at any indentation: how the lines nest is
    /// what varies.
    fn safe_line() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec!["a", "b", "c"]);
        let body = prop_oneof![
            (key.clone(), safe_scalar()).prop_map(|(k, v)| format!("{k}: {v}")),
            key.clone().prop_map(|k| format!("{k}:")),
            safe_scalar().prop_map(|v| format!("- {v}")),
            (key.clone(), safe_scalar()).prop_map(|(k, v)| format!("- {k}: {v}")),
            key.prop_map(|k| format!("- {k}:")),
            safe_scalar().prop_map(|v| format!("- - {v}")),
            Just("-".to_string()),
            Just("  # comment".to_string()),
            Just("---".to_string()),
        ];
        (0usize..6, body).prop_map(|(i, b)| {
            if b == "---" {
                b
            } else {
                format!("{}{b}", " ".repeat(i))
            }
        })
    }

    /// A random tree of the kind manifests hold.
    #[derive(Debug, Clone)]
    enum Tree {
        Scalar(String),
        Map(Vec<(String, Tree)>),
        Seq(Vec<Tree>),
    }

    fn tree() -> impl Strategy<Value = Tree> {
        let leaf = scalar_text().prop_map(Tree::Scalar);
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec((key_text(), inner.clone()), 0..5).prop_map(Tree::Map),
                prop::collection::vec(inner, 0..5).prop_map(Tree::Seq),
            ]
        })
    }

    /// How a tree is written: indentation width, indentless sequences, compact entries,
    /// flow sequences, comments.
    #[derive(Debug, Clone)]
    struct Style {
        width: usize,
        indentless: bool,
        compact: bool,
        flow: bool,
        comments: bool,
    }

    fn style() -> impl Strategy<Value = Style> {
        (
            1usize..5,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(width, indentless, compact, flow, comments)| Style {
                width,
                indentless,
                compact,
                flow,
                comments,
            })
    }

    /// Scalars that a flow sequence can hold as they are.
    fn flow_only(items: &[Tree]) -> bool {
        items
            .iter()
            .all(|t| matches!(t, Tree::Scalar(s) if !s.contains(['#', ':'])))
    }

    fn flow(items: &[Tree]) -> String {
        let parts: Vec<&str> = items
            .iter()
            .map(|t| match t {
                Tree::Scalar(s) => s.as_str(),
                _ => unreachable!(),
            })
            .collect();
        format!("[{}]", parts.join(", "))
    }

    /// Write `t` as the value after `head` (`key:` or `-`) at `indent`.
    fn write(t: &Tree, head: &str, indent: usize, st: &Style, out: &mut String) {
        let pad = " ".repeat(indent);
        let comment = if st.comments { "  # c" } else { "" };
        match t {
            Tree::Scalar(s) => out.push_str(&format!("{pad}{head} {s}{comment}\n")),
            Tree::Seq(items) if items.is_empty() || (st.flow && flow_only(items)) => {
                out.push_str(&format!("{pad}{head} {}{comment}\n", flow(items)))
            }
            Tree::Map(entries) if entries.is_empty() => {
                out.push_str(&format!("{pad}{head} {{}}{comment}\n"))
            }
            Tree::Seq(items) => {
                out.push_str(&format!("{pad}{head}{comment}\n"));
                let inner = if st.indentless && head != "-" {
                    indent
                } else {
                    indent + st.width
                };
                for item in items {
                    write(item, "-", inner, st, out);
                }
            }
            Tree::Map(entries) => {
                if head == "-" && st.compact {
                    // `- key: value`, the rest of the mapping under the key.
                    let mut body = String::new();
                    for (k, v) in entries {
                        write(v, &format!("{k}:"), indent + 2, st, &mut body);
                    }
                    let first = body.trim_start_matches(' ');
                    out.push_str(&format!("{pad}- {first}"));
                } else {
                    out.push_str(&format!("{pad}{head}{comment}\n"));
                    for (k, v) in entries {
                        write(v, &format!("{k}:"), indent + st.width, st, out);
                    }
                }
            }
        }
    }

    fn render(entries: &[(String, Tree)], st: &Style) -> String {
        let mut out = String::new();
        if st.comments {
            out.push_str("# head\n");
        }
        for (k, v) in entries {
            write(v, &format!("{k}:"), 0, st, &mut out);
        }
        out
    }

    /// Scalars the fast path must read, in every position.
    fn safe_scalar() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "a",
            "vm1",
            "1",
            "0",
            "012",
            "1.5",
            "1e5",
            "10.1.0.1",
            "172.16.0.1/12",
            "1536MiB",
            "10:00",
            "null",
            "~",
            "true",
            "False",
            "a b",
            "a#b",
            "'q'",
            "'it''s'",
            "\"q\"",
            "\"1\"",
            "/dev/x",
            "rampart.dev/v1alpha1",
            "-10",
            "-1.5",
            "-0",
        ])
        .prop_map(str::to_string)
    }

    fn safe_tree() -> impl Strategy<Value = Tree> {
        let leaf = safe_scalar().prop_map(Tree::Scalar);
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::btree_map("[a-e][a-z0-9]{0,3}", inner.clone(), 0..5)
                    .prop_map(|m| Tree::Map(m.into_iter().collect())),
                prop::collection::vec(inner, 0..5).prop_map(Tree::Seq),
            ]
        })
    }

    /// `parse` declines `text`, or reads what serde_yaml reads.
    fn declined_or_agrees(text: &str) -> Result<(), TestCaseError> {
        if let Some(docs) = super::parse(text) {
            prop_assert_eq!(
                shown(&Some(docs)),
                shown(&reference(text)),
                "text:\n{}",
                text
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_manifest_style_is_read_in_all_its_forms(
            docs in prop::collection::vec(
                prop::collection::btree_map("[a-e][a-z0-9]{0,3}", safe_tree(), 1..5), 1..3),
            st in style(),
        ) {
            let text = docs
                .iter()
                .map(|d| render(&d.clone().into_iter().collect::<Vec<_>>(), &st))
                .collect::<Vec<_>>()
                .join("---\n");
            let parsed = super::parse(&text);
            prop_assert!(parsed.is_some(), "declined:\n{}", text);
            prop_assert_eq!(shown(&parsed), shown(&reference(&text)), "text:\n{}", text);
        }

        #[test]
        fn line_soup_is_declined_or_read_as_serde_yaml_reads_it(
            lines in prop::collection::vec(line(), 1..12)
        ) {
            declined_or_agrees(&lines.join("\n"))?;
        }

        #[test]
        fn indentation_soup_is_declined_or_read_as_serde_yaml_reads_it(
            lines in prop::collection::vec(safe_line(), 1..10)
        ) {
            declined_or_agrees(&lines.join("\n"))?;
        }

        #[test]
        fn written_trees_are_declined_or_read_as_serde_yaml_reads_them(
            docs in prop::collection::vec(prop::collection::vec((key_text(), tree()), 1..5), 1..3),
            st in style(),
            leading_marker in any::<bool>(),
        ) {
            let text = docs
                .iter()
                .map(|d| render(d, &st))
                .collect::<Vec<_>>()
                .join("---\n");
            let text = if leading_marker { format!("---\n{text}") } else { text };
            declined_or_agrees(&text)?;
        }
    }
}
