//! Positions of fields in YAML text, by path.
//!
//! serde_yaml parses the documents; this index re-reads a file with an event parser that
//! keeps positions and records, for each path (`spec.replicas[1].node`), where its key and its
//! value start. Paths use the same notation as `serde_path_to_error`, so a deserialization
//! error and a validation rule locate fields the same way.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::diag::Part;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    line: usize,
    column: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Spans {
    key: Option<Pos>,
    value: Pos,
}

#[derive(Debug, Clone, Default)]
pub struct SpanIndex {
    docs: Vec<HashMap<String, Spans>>,
    duplicate: Option<(usize, String)>,
    /// Characters on each line of the text, to keep positions inside it.
    lines: Vec<usize>,
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        key_pos: Option<Pos>,
        seen: std::collections::HashSet<String>,
        /// No key read yet. yaml-rust2 marks a block mapping's start at the `:` after its
        /// first key; the first key's own position is where the mapping really starts.
        first: bool,
    },
    Seq {
        path: String,
        next: usize,
    },
    /// Inside a complex (non-scalar) mapping key: nothing in it is addressable.
    Opaque {
        depth: usize,
    },
}

struct Builder {
    docs: Vec<HashMap<String, Spans>>,
    stack: Vec<Frame>,
    /// The first key repeated within one mapping: (document, path).
    duplicate: Option<(usize, String)>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Builder {
    /// A node (scalar, alias, mapping or sequence start) begins at `pos`. Returns its path, or
    /// `None` when the node is a mapping key (recorded, not a value).
    fn node(&mut self, pos: Pos, scalar: Option<&str>) -> Option<String> {
        let doc = self.docs.last_mut()?;
        match self.stack.last_mut() {
            None => {
                doc.insert(
                    String::new(),
                    Spans {
                        key: None,
                        value: pos,
                    },
                );
                Some(String::new())
            }
            Some(Frame::Opaque { .. }) => None,
            Some(Frame::Map {
                path,
                key,
                key_pos,
                seen,
                first,
            }) => match key.take() {
                None => {
                    // This node is a key.
                    if std::mem::take(first) {
                        if let Some(s) = doc.get_mut(path.as_str()) {
                            s.value = s.value.min(pos);
                        }
                    }
                    let k = scalar.unwrap_or("?").to_string();
                    if scalar.is_some() && !seen.insert(k.clone()) && self.duplicate.is_none() {
                        let p = join(path, &k);
                        // Record the repeat's own position under the path.
                        doc.insert(
                            p.clone(),
                            Spans {
                                key: Some(pos),
                                value: pos,
                            },
                        );
                        self.duplicate = Some((self.docs.len() - 1, p));
                    }
                    *key = Some(k);
                    *key_pos = Some(pos);
                    None
                }
                Some(k) => {
                    let p = join(path, &k);
                    doc.insert(
                        p.clone(),
                        Spans {
                            key: key_pos.take(),
                            value: pos,
                        },
                    );
                    Some(p)
                }
            },
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                doc.insert(
                    p.clone(),
                    Spans {
                        key: None,
                        value: pos,
                    },
                );
                Some(p)
            }
        }
    }

    fn is_key_position(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        if self.docs.is_empty() && !matches!(ev, Event::DocumentStart | Event::StreamStart) {
            self.docs.push(HashMap::new());
        }
        if let Some(Frame::Opaque { depth }) = self.stack.last_mut() {
            match ev {
                Event::MappingStart(..) | Event::SequenceStart(..) => *depth += 1,
                Event::MappingEnd | Event::SequenceEnd => {
                    *depth -= 1;
                    if *depth == 0 {
                        self.stack.pop();
                        // The complex key is done; its value comes next.
                        if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                            *key = Some("?".into());
                        }
                    }
                }
                _ => {}
            }
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.docs.push(HashMap::new());
                self.stack.clear();
            }
            Event::Scalar(ref v, style, ..) => {
                let path = self.node(pos, Some(v));
                // An empty value (`apiVersion:` and nothing after it) is marked where the next
                // token starts, often the next line's key. Point at its own key instead.
                if v.is_empty() && style == TScalarStyle::Plain {
                    if let (Some(p), Some(doc)) = (path, self.docs.last_mut()) {
                        if let Some(s) = doc.get_mut(&p) {
                            s.value = s.key.unwrap_or(s.value);
                        }
                    }
                }
            }
            Event::Alias(_) => {
                self.node(pos, None);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if self.is_key_position() {
                    // A complex key: its position still starts the mapping.
                    self.node(pos, None);
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = None;
                    }
                    self.stack.push(Frame::Opaque { depth: 1 });
                    return;
                }
                let path = self.node(pos, None).unwrap_or_default();
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map {
                        path,
                        key: None,
                        key_pos: None,
                        seen: Default::default(),
                        first: true,
                    }
                } else {
                    Frame::Seq { path, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl SpanIndex {
    /// Index every document of `text`. A syntax error ends the index where it occurs; paths
    /// after it fall back to their nearest indexed parent.
    pub fn build(text: &str) -> SpanIndex {
        let mut b = Builder {
            docs: Vec::new(),
            stack: Vec::new(),
            duplicate: None,
        };
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut b, true);
        SpanIndex {
            docs: b.docs,
            duplicate: b.duplicate,
            lines: line_lengths(text),
        }
    }

    /// The first mapping key that appears twice in its mapping, as (document, path).
    pub fn first_duplicate(&self) -> Option<(usize, String)> {
        self.duplicate.clone()
    }

    /// Line and column (1-based) of `path` in document `doc`. Falls back to the nearest
    /// parent that exists, then to the start of the file.
    pub fn locate(&self, doc: usize, path: &str, part: Part) -> (usize, usize) {
        let Some(map) = self.docs.get(doc) else {
            return (1, 1);
        };
        let mut p = path;
        loop {
            if let Some(s) = map.get(p) {
                let pos = match part {
                    Part::Key => s.key.unwrap_or(s.value),
                    Part::Value => s.value,
                };
                return clamp(&self.lines, pos.line, pos.column);
            }
            if p.is_empty() {
                return (1, 1);
            }
            p = parent(p);
        }
    }
}

/// Characters on each line of `text`, with line breaks as libyaml counts them (YAML 1.1: LF,
/// CR, CRLF, NEL, LS and PS). A final line break ends the last line; it does not start another.
fn line_lengths(text: &str) -> Vec<usize> {
    let mut lines: Vec<usize> = vec![0];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => lines.push(0),
            _ => *lines.last_mut().unwrap() += 1,
        }
    }
    if lines.len() > 1 && lines.last() == Some(&0) {
        lines.pop();
    }
    lines
}

/// Both YAML parsers end a stream that lacks a final line break with one of their own, so a
/// position at the end of such a file (an unclosed bracket, an empty value) lands on a line
/// the file does not have. It belongs just after the last character.
fn clamp(lines: &[usize], line: usize, column: usize) -> (usize, usize) {
    if line >= 1 && line <= lines.len() {
        (line, column.max(1))
    } else {
        (lines.len().max(1), lines.last().map_or(0, |n| *n) + 1)
    }
}

/// [`clamp`] for a position reported by the YAML parser in `text`.
pub(crate) fn within_text(text: &str, line: usize, column: usize) -> (usize, usize) {
    clamp(&line_lengths(text), line, column)
}

/// `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> ``.
fn parent(p: &str) -> &str {
    match p.rfind(['.', '[']) {
        Some(i) => &p[..i],
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
apiVersion: v1
kind: Node
spec:
  fencing:
    - devices:
        - device: ipmi
          plug: \"3\"
---
kind: Other
spec: {a: 1, b: [x, y]}
";

    #[test]
    fn locates_keys_values_and_sequence_items() {
        let ix = SpanIndex::build(TEXT);
        assert_eq!(ix.locate(0, "kind", Part::Key), (2, 1));
        assert_eq!(ix.locate(0, "kind", Part::Value), (2, 7));
        assert_eq!(
            ix.locate(0, "spec.fencing[0].devices[0].device", Part::Key),
            (6, 11)
        );
        assert_eq!(
            ix.locate(0, "spec.fencing[0].devices[0].plug", Part::Value),
            (7, 17)
        );
        assert_eq!(ix.locate(1, "spec.b[1]", Part::Value), (10, 21));
    }

    #[test]
    fn unknown_paths_fall_back_to_the_nearest_parent() {
        let ix = SpanIndex::build(TEXT);
        assert_eq!(
            ix.locate(0, "spec.fencing[0].nope", Part::Key),
            ix.locate(0, "spec.fencing[0]", Part::Key)
        );
        assert_eq!(ix.locate(7, "x", Part::Key), (1, 1));
    }

    #[test]
    fn block_mappings_start_at_their_first_key() {
        // yaml-rust2 marks a block mapping at the `:` of its first key.
        let ix = SpanIndex::build("---\nkind: Node\nspec:\n  items:\n    - name: a\n      x: 1\n");
        assert_eq!(ix.locate(0, "", Part::Value), (2, 1));
        assert_eq!(ix.locate(0, "spec", Part::Value), (4, 3));
        assert_eq!(ix.locate(0, "spec.items[0]", Part::Value), (5, 7));
        // A flow mapping starts at its brace.
        let ix = SpanIndex::build("spec: {a: 1}\n");
        assert_eq!(ix.locate(0, "spec", Part::Value), (1, 7));
    }

    #[test]
    fn positions_stay_inside_the_text() {
        // Both parsers put the end of a stream without a final line break on a line after it.
        assert_eq!(within_text("a: [b\n", 2, 1), (1, 6));
        assert_eq!(within_text("a: [b", 2, 1), (1, 6));
        assert_eq!(within_text("x: 1\r\na: [b\r\n", 3, 1), (2, 6));
        assert_eq!(within_text("x: 1\na: b\n", 2, 4), (2, 4));
        assert_eq!(within_text("", 2, 1), (1, 1));
        let ix = SpanIndex::build("kind: Node\napiVersion: ");
        assert_eq!(ix.locate(0, "apiVersion", Part::Value), (2, 1));
    }

    #[test]
    fn empty_values_are_located_at_their_key() {
        let ix = SpanIndex::build("apiVersion:\nkind: Node\nspec:\n  role:\n  x: \"\"\n");
        assert_eq!(ix.locate(0, "apiVersion", Part::Value), (1, 1));
        assert_eq!(ix.locate(0, "spec.role", Part::Value), (4, 3));
        assert_eq!(ix.locate(0, "spec.x", Part::Value), (5, 6));
    }

    #[test]
    fn complex_keys_do_not_confuse_the_index() {
        let ix = SpanIndex::build("? [a, b]\n: 1\nc: 2\n");
        assert_eq!(ix.locate(0, "c", Part::Key), (3, 1));
    }
}
