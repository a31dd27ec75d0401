//! A small reader over a parsed config tree that records every problem with
//! its path instead of stopping at the first, and reports unknown keys.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Map, Value};

use super::Problem;

#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

/// One table of the tree; keys are taken out as they are read, so whatever
/// is left at [`Section::finish`] is unknown.
pub(super) struct Section {
    path: String,
    map: Map<String, Value>,
}

impl Section {
    pub(super) fn new(path: String, map: Map<String, Value>) -> Self {
        Section { path, map }
    }

    fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub(super) fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key)
    }

    /// A nested table; a missing one is empty.
    pub(super) fn section(&mut self, key: &str, problems: &mut Problems) -> Section {
        let path = self.field_path(key);
        match self.take(key) {
            None => Section::new(path, Map::new()),
            Some(Value::Object(map)) => Section::new(path, map),
            Some(other) => {
                problems.push(&path, format!("expected a table, found {}", kind_of(&other)));
                Section::new(path, Map::new())
            }
        }
    }

    /// Reports the keys nobody read.
    pub(super) fn finish(self, problems: &mut Problems) {
        for key in self.map.keys() {
            problems.push(self.field_path(key), "unknown field");
        }
    }

    fn parsed<T>(
        &mut self,
        key: &str,
        problems: &mut Problems,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.take(key)?;
        match parse(&value) {
            Ok(v) => Some(v),
            Err(message) => {
                problems.push(self.field_path(key), message);
                None
            }
        }
    }

    pub(super) fn string(&mut self, key: &str, problems: &mut Problems) -> Option<String> {
        self.parsed(key, problems, |v| {
            scalar_string(v).ok_or_else(|| expected("a string", v))
        })
    }

    pub(super) fn boolean(&mut self, key: &str, problems: &mut Problems) -> Option<bool> {
        self.parsed(key, problems, |v| match v {
            Value::Bool(b) => Ok(*b),
            // Environment overrides arrive as strings.
            Value::String(s) if s == "true" => Ok(true),
            Value::String(s) if s == "false" => Ok(false),
            other => Err(expected("true or false", other)),
        })
    }

    pub(super) fn integer<T: FromStr + TryFrom<i64>>(&mut self, key: &str, problems: &mut Problems) -> Option<T> {
        self.parsed(key, problems, parse_integer)
    }

    pub(super) fn duration(&mut self, key: &str, problems: &mut Problems) -> Option<Duration> {
        self.parsed(key, problems, |v| match v {
            Value::String(s) => humantime::parse_duration(s)
                .map_err(|e| format!("'{s}' is not a duration ({e}); write e.g. \"500ms\", \"10s\" or \"1m\"")),
            other => Err(format!(
                "expected a duration with a unit such as \"10s\", found {}",
                kind_of(other)
            )),
        })
    }

    pub(super) fn addr(&mut self, key: &str, problems: &mut Problems) -> Option<SocketAddr> {
        self.parsed(key, problems, parse_addr)
    }

    /// An address, or `"disabled"` for none.
    pub(super) fn optional_addr(&mut self, key: &str, problems: &mut Problems) -> Option<Option<SocketAddr>> {
        self.parsed(key, problems, |v| match v {
            Value::String(s) if s == "disabled" => Ok(None),
            other => parse_addr(other).map(Some),
        })
    }

    /// A table of scalars, each read as a string.
    pub(super) fn string_map(&mut self, key: &str, problems: &mut Problems) -> Option<BTreeMap<String, String>> {
        let path = self.field_path(key);
        self.parsed(key, problems, |v| {
            table_of(v, &path, |v| scalar_string(v).ok_or_else(|| expected("a string", v)))
        })
    }

    /// A list of strings.
    pub(super) fn string_list(&mut self, key: &str, problems: &mut Problems) -> Option<Vec<String>> {
        self.parsed(key, problems, |v| match v {
            Value::Array(items) => items
                .iter()
                .map(|i| scalar_string(i).ok_or_else(|| expected("a list of strings", i)))
                .collect(),
            other => Err(expected("a list of strings", other)),
        })
    }

    pub(super) fn path(&self) -> &str {
        &self.path
    }

    pub(super) fn integer_map(&mut self, key: &str, problems: &mut Problems) -> Option<BTreeMap<String, i64>> {
        let path = self.field_path(key);
        self.parsed(key, problems, |v| table_of(v, &path, parse_integer))
    }
}

fn table_of<T>(
    value: &Value,
    path: &str,
    parse: impl Fn(&Value) -> Result<T, String>,
) -> Result<BTreeMap<String, T>, String> {
    let Value::Object(map) = value else {
        return Err(expected("a table", value));
    };
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (k, v) in map {
        match parse(v) {
            Ok(parsed) => {
                out.insert(k.clone(), parsed);
            }
            Err(e) => errors.push(format!("{path}.{k}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        // Reported under the table's own path; each entry names its key.
        Err(errors.join("; "))
    }
}

fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_integer<T: FromStr + TryFrom<i64>>(value: &Value) -> Result<T, String> {
    let out_of_range = || format!("{value} is out of range");
    match value {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| expected("a whole number", value))
            .and_then(|i| T::try_from(i).map_err(|_| out_of_range())),
        Value::String(s) => s
            .trim()
            .parse::<T>()
            .map_err(|_| format!("'{s}' is not a whole number in range")),
        other => Err(expected("a whole number", other)),
    }
}

fn parse_addr(value: &Value) -> Result<SocketAddr, String> {
    let Value::String(s) = value else {
        return Err(expected("an address such as \"127.0.0.1:34904\"", value));
    };
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // Resolving names would be I/O; `localhost` is the one name allowed.
    if let Some(port) = s.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    Err(format!(
        "'{s}' is not an address; write ip:port, e.g. \"127.0.0.1:34904\" or \"0.0.0.0:34904\""
    ))
}

fn expected(what: &str, found: &Value) -> String {
    format!("expected {what}, found {}", kind_of(found))
}

pub(crate) fn kind_of(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string \"{s}\""),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a table".into(),
    }
}
