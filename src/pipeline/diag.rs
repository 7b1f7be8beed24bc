//! Diagnostics for pipeline files: every error points at `file:line:column`, says what was
//! expected and, where one helps, gives a hint.

use std::fmt;
use std::ops::Range;

/// One problem in a pipeline file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line and column of the offending text.
    pub line: usize,
    pub column: usize,
    /// What is wrong, and what was expected.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// A pipeline file that cannot be deployed, with every problem found in it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<Diagnostic>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Turns byte offsets of one file into diagnostics.
#[derive(Clone, Debug)]
pub struct Source<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl<'a> Source<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Source { file, text }
    }

    /// 1-based line and column (in characters) of byte offset `at`.
    pub fn line_col(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.text.len());
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[start..].chars().count() + 1)
    }

    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        let (line, column) = self.line_col(span.start);
        Diagnostic {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
            hint: None,
        }
    }

    pub fn error_hint(
        &self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Diagnostic {
        let mut d = self.error(span, message);
        d.hint = Some(hint.into());
        d
    }

    /// Where byte `at` of a string value's content lies in the file, `literal` being the
    /// value's span (quotes included). Skips the opening quotes and a multi-line string's
    /// first newline, and counts escapes (`\"`, `\u00e9`, a line-ending `\`) at their written
    /// length, so an error inside an expression points at the very character in the file.
    pub fn in_string(&self, literal: &Range<usize>, at: usize) -> usize {
        let start = literal.start.min(self.text.len());
        let end = literal.end.clamp(start, self.text.len());
        let raw = &self.text[start..end];
        let (open, basic) = match raw {
            r if r.starts_with("\"\"\"") => (3, true),
            r if r.starts_with("'''") => (3, false),
            r if r.starts_with('"') => (1, true),
            r if r.starts_with('\'') => (1, false),
            _ => return start + at,
        };
        let mut i = open;
        if open == 3 {
            if raw[i..].starts_with("\r\n") {
                i += 2;
            } else if raw[i..].starts_with('\n') {
                i += 1;
            }
        }
        let mut decoded = 0;
        while decoded < at && i < raw.len() {
            let rest = &raw[i..];
            if basic && rest.starts_with('\\') {
                let after = &rest[1..];
                let trimmed = after.trim_start_matches([' ', '\t']);
                if trimmed.starts_with('\n') || trimmed.starts_with("\r\n") {
                    // A line-ending backslash: it and the whitespace after it vanish.
                    let skipped = after.len() - after.trim_start().len();
                    i += 1 + skipped;
                    continue;
                }
                let (written, hex) = match after.as_bytes().first() {
                    Some(b'u') => (6, 4),
                    Some(b'U') => (10, 8),
                    _ => (2, 0),
                };
                let len = match hex {
                    0 => 1,
                    n => rest
                        .get(2..2 + n)
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .and_then(char::from_u32)
                        .map_or(1, char::len_utf8),
                };
                i += written.min(rest.len());
                decoded += len;
                continue;
            }
            let len = rest.chars().next().map_or(1, char::len_utf8);
            i += len;
            decoded += len;
        }
        start + i.min(raw.len())
    }

    /// The header (`[name]`, `[[name]]`) of the table at `span`, without the body that the
    /// table's span also covers. Other spans (values, inline tables) are returned as they are.
    pub fn table_header(&self, span: Range<usize>) -> Range<usize> {
        let at = span.start.min(self.text.len());
        if self.text[at..].starts_with('[') {
            let rest = &self.text[at..];
            let end = match rest.find(']') {
                Some(i) if rest[i + 1..].starts_with(']') => i + 2,
                Some(i) => i + 1,
                None => rest.find('\n').unwrap_or(rest.len()),
            };
            return at..at + end;
        }
        span
    }

    /// A TOML or shape error (from `toml::from_str`) as a diagnostic, with a did-you-mean hint
    /// for unknown keys and values.
    pub fn toml_error(&self, e: &toml::de::Error, sections: &[&str]) -> Diagnostic {
        let span = e.span().unwrap_or(0..0);
        let mut message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        for (rust, plain) in [
            ("expected u32", "expected a whole number, 0 or more"),
            ("expected u64", "expected a whole number, 0 or more"),
            ("expected i64", "expected a whole number"),
            ("expected f64", "expected a number"),
            ("expected a sequence", "expected an array"),
            ("expected a map", "expected a table"),
        ] {
            message = message.replace(rust, plain);
        }
        let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
            .map(str::to_string)
        {
            if sections.contains(&field.as_str()) {
                let (what, add) = match field.as_str() {
                    "output" => (
                        "[[output]]",
                        "add one: [[output]] with kind = \"websocket\" and channel = \"...\"",
                    ),
                    "model" => (
                        "[model]",
                        "add [model] with name = \"nfl_wp\" and version = \"v1\", or expr = \"...\"",
                    ),
                    "source" => ("[source]", "add [source] with topics = [\"...\"]"),
                    _ => ("[pipeline]", "add [pipeline] with name, version and sport"),
                };
                return self.error_hint(
                    0..0,
                    format!("missing field `{field}`: the file has no {what} section"),
                    format!("{add}; see pipelines/README.md"),
                );
            }
            let header = self.table_header(span.clone());
            let mut d = self.error(header.clone(), message.clone());
            if header != span {
                d.message = format!("{message} in {}", &self.text[header]);
            }
            return d;
        }
        let mut d = self.error(span, message.clone());
        if message.starts_with("invalid basic string")
            || message.starts_with("invalid literal string")
        {
            d.hint = Some(
                "is the closing quote missing? use \"\"\"...\"\"\" for a string over several lines"
                    .into(),
            );
        }
        if message.starts_with("unknown field") || message.starts_with("unknown variant") {
            if let Some((name, expected)) = quoted.split_first() {
                let alias = ALIASES
                    .iter()
                    .find(|(a, to)| a == name && expected.contains(to))
                    .map(|(_, to)| *to);
                if let Some(c) = alias.or_else(|| closest(name, expected.iter().copied())) {
                    d.hint = Some(format!("did you mean `{c}`?"));
                }
            }
        }
        d
    }
}

/// Names people carry over from elsewhere, and what they are called here.
const ALIASES: [(&str, &str); 9] = [
    ("avg", "mean"),
    ("average", "mean"),
    ("std", "stddev"),
    ("stdev", "stddev"),
    ("total", "sum"),
    ("latest", "last"),
    ("ema", "ewma"),
    ("ws", "websocket"),
    ("football", "nfl"),
];

/// The closest of `candidates` to `name`, for "did you mean" hints (edit distance at most 2,
/// or a prefix).
pub fn closest<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = distance(name, c);
        let ok = d <= 2.max(name.len() / 4) || c.starts_with(name) || name.starts_with(c);
        if ok && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_in_characters() {
        let s = Source::new("f.toml", "a = 1\nbé = 2\n");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(6), (2, 1));
        assert_eq!(s.line_col(10), (2, 4));
    }

    #[test]
    fn offsets_inside_strings_count_escapes_at_their_written_length() {
        let text = "a = \"x \\\"y\\\" zz\"\nb = '''\nq\nzz'''\nc = \"\\u00e9 zz\"\n";
        let s = Source::new("f.toml", text);
        let at = |lit: &str, inner: usize| {
            let start = text.find(lit).unwrap();
            s.line_col(s.in_string(&(start..text.len()), inner))
        };
        // x "y" zz: `zz` is byte 6 of the value, column 14 in the file.
        assert_eq!(at("\"x", 6), (1, 14));
        // The newline right after ''' is not part of the value.
        assert_eq!(at("'''", 2), (4, 1));
        // é is one character written as six.
        assert_eq!(at("\"\\u", 3), (5, 13));
    }

    #[test]
    fn a_table_is_named_by_its_header() {
        let text = "[a]\nx = 1\n\n[[b]]\ny = 2\n";
        let s = Source::new("f.toml", text);
        assert_eq!(s.table_header(11..text.len()), 11..16);
        assert_eq!(s.table_header(4..9), 4..9);
    }

    #[test]
    fn closest_suggests_near_names_only() {
        assert_eq!(
            closest("scor_diff", ["score_diff", "plays"]),
            Some("score_diff")
        );
        assert_eq!(closest("zzz", ["score_diff", "plays"]), None);
    }
}
