//! A small JSON value for the `--json` output of the commands: objects keep their key order,
//! strings are escaped as RFC 8259 requires. Output only; nothing here parses.

use std::fmt;

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// An object from `(key, value)` pairs, in that order.
    pub fn object<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
    pub fn str(text: impl Into<String>) -> Json {
        Json::Str(text.into())
    }
    /// A count or size; values past `i64::MAX` are clamped.
    pub fn uint(n: impl TryInto<i64>) -> Json {
        Json::Int(n.try_into().unwrap_or(i64::MAX))
    }
    pub fn opt_int(n: Option<i64>) -> Json {
        n.map_or(Json::Null, Json::Int)
    }
}

fn write_str(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in text.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Int(n) => write!(f, "{n}"),
            Json::Str(s) => write_str(f, s),
            Json::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Json::Object(pairs) => {
                f.write_str("{")?;
                for (i, (key, value)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write_str(f, key)?;
                    write!(f, ":{value}")?;
                }
                f.write_str("}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_json() {
        let value = Json::object([
            ("path", Json::str("a \"b\"\\c\n\u{1}é")),
            ("n", Json::uint(3u64)),
            ("neg", Json::Int(-2)),
            ("list", Json::Array(vec![Json::Bool(true), Json::Null])),
            ("empty", Json::object(Vec::<(String, Json)>::new())),
        ]);
        assert_eq!(
            value.to_string(),
            r#"{"path":"a \"b\"\\c\n\u0001é","n":3,"neg":-2,"list":[true,null],"empty":{}}"#
        );
        assert_eq!(Json::uint(u64::MAX), Json::Int(i64::MAX));
    }
}
