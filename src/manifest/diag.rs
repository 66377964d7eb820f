//! Diagnostics: what validation found, where, and how to fix it.
//!
//! Rules report a problem against a *path* inside a document (`spec.placement.allowed[1]`);
//! the path is turned into a line and column only when the diagnostics are rendered, by
//! re-reading just the files that have problems. A valid repository never pays for it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::span::SpanIndex;
use super::SourceFile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// Which part of a `key: value` pair a diagnostic points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Key,
    Value,
}

/// Where a diagnostic points, before it is resolved to a line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anchor {
    /// Nothing in particular (for example "no Cluster manifest").
    None,
    /// A whole file.
    File(usize),
    /// A known position in a file (1-based line and column).
    Pos {
        file: usize,
        line: usize,
        column: usize,
    },
    /// A field inside a document of a file, by path (`spec.fencing[0].devices[0].device`).
    Path {
        file: usize,
        doc: usize,
        path: String,
        part: Part,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A stable identifier of the rule, for tooling (`unresolved-reference`).
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
    pub anchor: Anchor,
}

impl Diagnostic {
    pub fn error(code: &'static str, anchor: Anchor, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            hint: None,
            anchor,
        }
    }
    pub fn warning(code: &'static str, anchor: Anchor, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Self::error(code, anchor, message)
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// A diagnostic with its location resolved, ready to print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub severity: Severity,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// The field the diagnostic is about, when it is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Rendered {
    /// `FILE:LINE:COL: error: MESSAGE` and, on the next line, the hint.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        match (&self.file, self.line, self.column) {
            (Some(f), Some(l), Some(c)) => write!(s, "{}:{l}:{c}: ", f.display()).unwrap(),
            (Some(f), _, _) => write!(s, "{}: ", f.display()).unwrap(),
            _ => {}
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(s, "{sev}: {}", self.message).unwrap();
        if let Some(field) = &self.field {
            write!(s, " [{field}]").unwrap();
        }
        if let Some(h) = &self.hint {
            write!(s, "\n  hint: {h}").unwrap();
        }
        s
    }
}

/// Resolve every diagnostic's anchor to a file, line and column, sorted by file and line
/// (errors before warnings at the same place).
pub fn render(files: &[SourceFile], diags: &[Diagnostic]) -> Vec<Rendered> {
    let mut indexes: Vec<Option<SpanIndex>> = vec![None; files.len()];
    let mut out: Vec<Rendered> = diags
        .iter()
        .map(|d| {
            let (file, line, column, field) = match &d.anchor {
                Anchor::None => (None, None, None, None),
                Anchor::File(f) => (Some(files[*f].path.clone()), None, None, None),
                Anchor::Pos { file, line, column } => (
                    Some(files[*file].path.clone()),
                    Some(*line),
                    Some(*column),
                    None,
                ),
                Anchor::Path {
                    file,
                    doc,
                    path,
                    part,
                } => {
                    let index =
                        indexes[*file].get_or_insert_with(|| SpanIndex::build(&files[*file].text));
                    let (line, col) = index.locate(*doc, path, *part);
                    let field = (!path.is_empty()).then(|| path.clone());
                    (
                        Some(files[*file].path.clone()),
                        Some(line),
                        Some(col),
                        field,
                    )
                }
            };
            Rendered {
                severity: d.severity,
                code: d.code,
                file,
                line,
                column,
                field,
                message: d.message.clone(),
                hint: d.hint.clone(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.severity).cmp(&(&b.file, b.line, b.column, b.severity))
    });
    out.dedup();
    out
}

/// Counts for the summary line.
pub fn summary(rendered: &[Rendered], files: usize) -> String {
    let errors = rendered
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = rendered.len() - errors;
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    format!(
        "{}, {} in {}",
        plural(errors, "error"),
        plural(warnings, "warning"),
        plural(files, "file")
    )
}

/// Display form of a path relative to the current directory when it is below it.
pub fn display_path(p: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(&cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| p.to_path_buf())
}
