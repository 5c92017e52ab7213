//! A minimal JSON writer for `results.json`.
//!
//! The harness builds offline with no dependencies, so there is no serde:
//! a [`Value`] tree is built by hand and written out. Only writing is
//! supported. Objects keep their insertion order. Values nested two levels
//! deep or more (e.g. one test's record in the `tests` array) are written
//! on one line, so that each record is also one line for `grep`.

use std::fmt::Write as _;

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// A number; NaN and the infinities, which JSON cannot express, are
    /// written as `null`.
    Num(f64),
    Str(String),
    Arr(Vec<Value>),
    Obj(Vec<(String, Value)>),
}

impl Value {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Self {
        Value::Str(s.into())
    }

    /// `null` for `None`, else the string.
    pub fn opt_str(s: Option<impl Into<String>>) -> Self {
        s.map_or(Value::Null, |s| Value::Str(s.into()))
    }

    /// An object from `(key, value)` pairs, in that order.
    pub fn obj<const N: usize>(fields: [(&str, Value); N]) -> Self {
        Value::Obj(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// The value as JSON text, with a final newline.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Num(x) if x.is_finite() => {
                let _ = write!(out, "{x}");
            }
            Value::Num(_) => out.push_str("null"),
            Value::Str(s) => escape_into(out, s),
            Value::Arr(items) => {
                write_seq(out, depth, '[', ']', items.iter(), |out, v, d| {
                    v.write(out, d)
                });
            }
            Value::Obj(fields) => {
                write_seq(out, depth, '{', '}', fields.iter(), |out, (k, v), d| {
                    escape_into(out, k);
                    out.push_str(": ");
                    v.write(out, d);
                });
            }
        }
    }
}

/// Write a sequence of items between `open` and `close`: one item per
/// indented line near the top of the tree, all on one line deeper down.
fn write_seq<I, T>(
    out: &mut String,
    depth: usize,
    open: char,
    close: char,
    items: I,
    mut item: impl FnMut(&mut String, T, usize),
) where
    I: ExactSizeIterator<Item = T>,
{
    out.push(open);
    let n = items.len();
    let pretty = depth < 2;
    for (i, v) in items.enumerate() {
        if pretty {
            out.push('\n');
            out.push_str(&"  ".repeat(depth + 1));
        }
        item(out, v, depth + 1);
        if i + 1 < n {
            out.push(',');
            if !pretty {
                out.push(' ');
            }
        }
    }
    if pretty && n > 0 {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    }
    out.push(close);
}

/// Append `s` as a quoted JSON string: `"` and `\` escaped, control
/// characters as `\n`-style or `\u00XX` escapes, everything else as is.
pub fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        let mut out = String::new();
        escape_into(&mut out, s);
        out
    }

    #[test]
    fn escapes_quotes_backslashes_and_control_characters() {
        assert_eq!(esc("plain"), r#""plain""#);
        assert_eq!(esc(r#"a "b" c\d"#), r#""a \"b\" c\\d""#);
        assert_eq!(esc("l1\nl2\r\t"), r#""l1\nl2\r\t""#);
        assert_eq!(
            esc("\u{1b}[0m\u{0}\u{8}\u{c}\u{7f}"),
            r#""\u001b[0m\u0000\b\f\u007f""#
        );
        // Non-ASCII text is valid in a JSON string as it is.
        assert_eq!(esc("ü → ✓"), "\"ü → ✓\"");
    }

    #[test]
    fn numbers_that_json_cannot_hold_are_null() {
        assert_eq!(Value::Num(f64::NAN).to_text(), "null\n");
        assert_eq!(Value::Num(f64::INFINITY).to_text(), "null\n");
        assert_eq!(Value::Num(1.5).to_text(), "1.5\n");
        assert_eq!(Value::Num(2.0).to_text(), "2\n");
        assert_eq!(Value::Num(1e21).to_text(), "1000000000000000000000\n");
        assert_eq!(Value::Int(-3).to_text(), "-3\n");
    }

    #[test]
    fn top_levels_are_indented_and_records_are_one_line() {
        let v = Value::obj([
            ("ok", Value::Bool(true)),
            ("none", Value::Null),
            ("empty", Value::Arr(vec![])),
            (
                "tests",
                Value::Arr(vec![
                    Value::obj([("name", Value::str("a")), ("rc", Value::Int(0))]),
                    Value::obj([("name", Value::str("b\"")), ("x", Value::Arr(vec![]))]),
                ]),
            ),
        ]);
        assert_eq!(
            v.to_text(),
            "{\n  \"ok\": true,\n  \"none\": null,\n  \"empty\": [],\n  \"tests\": [\n    \
             {\"name\": \"a\", \"rc\": 0},\n    {\"name\": \"b\\\"\", \"x\": []}\n  ]\n}\n"
        );
        assert_eq!(Value::Obj(vec![]).to_text(), "{}\n");
        assert_eq!(Value::opt_str(None::<&str>), Value::Null);
    }
}
