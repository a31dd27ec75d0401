//! Dapr's state query language (`QueryStateAlpha1`, `POST
//! /v1.0-alpha1/state/{store}/query`): a filter (EQ, NEQ, GT, GTE, LT,
//! LTE, IN, AND, OR over dotted paths into the JSON values), a sort and a
//! page. The store lists the live entries under the app's prefix; the
//! query runs here, the same for every store that can list.

use std::cmp::Ordering;

use serde_json::Value;

/// The most entries one query reads from a store.
pub const MAX_SCANNED: usize = 100_000;
/// The most results one page holds when the query sets no limit.
pub const DEFAULT_LIMIT: usize = 1_000;

/// A stored entry: key, value, and what the caller carries along (its
/// etag).
pub type Entry<T> = (String, Vec<u8>, T);

/// A parsed query.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    filter: Option<Filter>,
    sort: Vec<(Vec<String>, bool)>,
    limit: usize,
    offset: usize,
}

#[derive(Clone, Debug, PartialEq)]
enum Filter {
    Compare(Op, Vec<String>, Value),
    In(Vec<String>, Vec<Value>),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// The most nested filters one query may hold.
const MAX_DEPTH: usize = 32;

impl Query {
    /// Parses the query JSON; the error names what is wrong.
    pub fn parse(text: &str) -> Result<Query, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("the query is not JSON: {e}"))?;
        let Value::Object(mut query) = value else {
            return Err("the query must be a JSON object { filter, sort, page }".into());
        };
        let filter = match query.remove("filter") {
            None => None,
            Some(Value::Object(f)) if f.is_empty() => None,
            Some(f) => Some(filter(&f, 0)?),
        };
        let sort = match query.remove("sort") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    let key = item
                        .get("key")
                        .and_then(Value::as_str)
                        .filter(|k| !k.is_empty())
                        .ok_or("each sort entry needs a key")?;
                    let desc = match item.get("order").and_then(Value::as_str) {
                        None | Some("ASC") => false,
                        Some("DESC") => true,
                        Some(other) => return Err(format!("sort order '{other}' must be ASC or DESC")),
                    };
                    Ok((path(key), desc))
                })
                .collect::<Result<_, String>>()?,
            Some(_) => return Err("sort must be a list of { key, order }".into()),
        };
        let (mut limit, mut offset) = (DEFAULT_LIMIT, 0);
        if let Some(page) = query.remove("page") {
            let Value::Object(page) = page else {
                return Err("page must be an object { limit, token }".into());
            };
            match page.get("limit") {
                None | Some(Value::Null) => {}
                Some(v) => match v.as_u64() {
                    Some(0) => {}
                    Some(n) => limit = usize::try_from(n).unwrap_or(usize::MAX).min(MAX_SCANNED),
                    None => return Err("page.limit must be a whole number".into()),
                },
            }
            match page.get("token") {
                None | Some(Value::Null) => {}
                Some(Value::String(t)) if t.is_empty() => {}
                Some(Value::String(t)) => {
                    offset = t
                        .parse()
                        .map_err(|_| format!("page.token '{t}' is not a token this store gave"))?
                }
                Some(_) => return Err("page.token must be a string".into()),
            }
        }
        if let Some(key) = query.keys().next() {
            return Err(format!("unknown query field '{key}'; use filter, sort and page"));
        }
        Ok(Query {
            filter,
            sort,
            limit,
            offset,
        })
    }

    /// Runs the query over `(key, value)` entries: the matching page, and
    /// the token of the next page when there is one.
    pub fn run<T>(&self, entries: Vec<Entry<T>>) -> (Vec<Entry<T>>, Option<String>) {
        let mut matched: Vec<(Option<Value>, Entry<T>)> = entries
            .into_iter()
            .filter_map(|entry| {
                let json = serde_json::from_slice::<Value>(&entry.1).ok();
                match (&self.filter, &json) {
                    (None, _) => Some((json, entry)),
                    (Some(f), Some(v)) if f.matches(v) => Some((json, entry)),
                    _ => None,
                }
            })
            .collect();
        if self.sort.is_empty() {
            matched.sort_by(|a, b| a.1.0.cmp(&b.1.0));
        } else {
            matched.sort_by(|a, b| {
                for (field, desc) in &self.sort {
                    let x = a.0.as_ref().and_then(|v| lookup(v, field));
                    let y = b.0.as_ref().and_then(|v| lookup(v, field));
                    let order = compare_sort(x, y);
                    let order = if *desc { order.reverse() } else { order };
                    if order != Ordering::Equal {
                        return order;
                    }
                }
                a.1.0.cmp(&b.1.0)
            });
        }
        let total = matched.len();
        let end = self.offset.saturating_add(self.limit).min(total);
        let page: Vec<_> = matched
            .into_iter()
            .skip(self.offset)
            .take(end.saturating_sub(self.offset))
            .map(|(_, e)| e)
            .collect();
        let token = (end < total).then(|| end.to_string());
        (page, token)
    }
}

fn path(key: &str) -> Vec<String> {
    key.split('.').map(str::to_owned).collect()
}

fn filter(value: &Value, depth: usize) -> Result<Filter, String> {
    if depth > MAX_DEPTH {
        return Err(format!("the filter nests deeper than {MAX_DEPTH} levels"));
    }
    let Value::Object(map) = value else {
        return Err("a filter must be an object such as {\"EQ\": {\"field\": value}}".into());
    };
    if map.len() != 1 {
        return Err("a filter object must hold exactly one operator".into());
    }
    let Some((op, operand)) = map.iter().next() else {
        return Err("a filter object must hold exactly one operator".into());
    };
    let single = |operand: &Value| -> Result<(Vec<String>, Value), String> {
        match operand {
            Value::Object(m) if m.len() == 1 => {
                let Some((k, v)) = m.iter().next() else {
                    return Err(format!("{op} needs exactly one field"));
                };
                Ok((path(k), v.clone()))
            }
            _ => Err(format!("{op} needs an object with exactly one field")),
        }
    };
    let compare = |o: Op| single(operand).map(|(p, v)| Filter::Compare(o, p, v));
    match op.as_str() {
        "EQ" => compare(Op::Eq),
        "NEQ" => compare(Op::Neq),
        "GT" => compare(Op::Gt),
        "GTE" => compare(Op::Gte),
        "LT" => compare(Op::Lt),
        "LTE" => compare(Op::Lte),
        "IN" => {
            let (p, v) = single(operand)?;
            match v {
                Value::Array(items) => Ok(Filter::In(p, items)),
                _ => Err("IN needs a list of values".into()),
            }
        }
        "AND" | "OR" => {
            let Value::Array(items) = operand else {
                return Err(format!("{op} needs a list of filters"));
            };
            if items.is_empty() {
                return Err(format!("{op} needs at least one filter"));
            }
            let inner = items
                .iter()
                .map(|f| filter(f, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if op == "AND" {
                Filter::And(inner)
            } else {
                Filter::Or(inner)
            })
        }
        other => Err(format!(
            "unknown filter operator '{other}'; use EQ, NEQ, GT, GTE, LT, LTE, IN, AND or OR"
        )),
    }
}

impl Filter {
    fn matches(&self, value: &Value) -> bool {
        match self {
            Filter::And(all) => all.iter().all(|f| f.matches(value)),
            Filter::Or(any) => any.iter().any(|f| f.matches(value)),
            Filter::In(p, options) => lookup(value, p).is_some_and(|v| options.iter().any(|o| equal(v, o))),
            Filter::Compare(op, p, want) => {
                let Some(have) = lookup(value, p) else {
                    return *op == Op::Neq;
                };
                match op {
                    Op::Eq => equal(have, want),
                    Op::Neq => !equal(have, want),
                    _ => match compare(have, want) {
                        None => false,
                        Some(order) => match op {
                            Op::Gt => order == Ordering::Greater,
                            Op::Gte => order != Ordering::Less,
                            Op::Lt => order == Ordering::Less,
                            Op::Lte => order != Ordering::Greater,
                            Op::Eq | Op::Neq => false,
                        },
                    },
                }
            }
        }
    }
}

/// A dotted path into a JSON value.
fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, part| match v {
        Value::Object(m) => m.get(part),
        Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Numbers with numbers, strings with strings; anything else does not
/// compare.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Sorting: missing values first, then by type, then by value.
fn compare_sort(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            Some(Value::Array(_)) => 4,
            Some(Value::Object(_)) => 5,
        }
    }
    match (a, b) {
        (Some(x), Some(y)) => compare(x, y).unwrap_or_else(|| rank(a).cmp(&rank(b))),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<(String, Vec<u8>, ())> {
        [
            (
                "1",
                r#"{"person":{"org":"Dev Ops","id":1036},"city":"Seattle","state":"WA"}"#,
            ),
            (
                "2",
                r#"{"person":{"org":"Hardware","id":1028},"city":"Portland","state":"OR"}"#,
            ),
            (
                "3",
                r#"{"person":{"org":"Finance","id":1071},"city":"Sacramento","state":"CA"}"#,
            ),
            (
                "4",
                r#"{"person":{"org":"Dev Ops","id":1042},"city":"Spokane","state":"WA"}"#,
            ),
            ("5", "not json"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec(), ()))
        .collect()
    }

    fn keys(query: &str) -> (Vec<String>, Option<String>) {
        let (page, token) = Query::parse(query).expect("parses").run(entries());
        (page.into_iter().map(|e| e.0).collect(), token)
    }

    #[test]
    fn filters_combine_and_compare_by_type() {
        assert_eq!(keys(r#"{"filter":{"EQ":{"state":"WA"}}}"#).0, ["1", "4"]);
        assert_eq!(keys(r#"{"filter":{"NEQ":{"state":"WA"}}}"#).0, ["2", "3"]);
        assert_eq!(keys(r#"{"filter":{"GT":{"person.id":1036}}}"#).0, ["3", "4"]);
        assert_eq!(keys(r#"{"filter":{"LTE":{"person.id":1036}}}"#).0, ["1", "2"]);
        assert_eq!(keys(r#"{"filter":{"IN":{"state":["CA","OR"]}}}"#).0, ["2", "3"]);
        let and = r#"{"filter":{"AND":[{"EQ":{"person.org":"Dev Ops"}},{"OR":[{"EQ":{"city":"Spokane"}},{"LT":{"person.id":1000}}]}]}}"#;
        assert_eq!(keys(and).0, ["4"]);
        // Without a filter every entry comes back, JSON or not.
        assert_eq!(keys("{}").0, ["1", "2", "3", "4", "5"]);
    }

    #[test]
    fn sort_and_pages_walk_every_result_once() {
        let q = r#"{"sort":[{"key":"state","order":"DESC"},{"key":"person.id"}],"page":{"limit":2}}"#;
        let (first, token) = keys(q);
        assert_eq!(first, ["1", "4"]);
        let token = token.expect("more pages");
        let next = format!(
            r#"{{"sort":[{{"key":"state","order":"DESC"}},{{"key":"person.id"}}],"page":{{"limit":2,"token":"{token}"}}}}"#
        );
        let (second, token) = keys(&next);
        assert_eq!(second, ["2", "3"]);
        let next = format!(
            r#"{{"sort":[{{"key":"state","order":"DESC"}},{{"key":"person.id"}}],"page":{{"limit":2,"token":"{}"}}}}"#,
            token.expect("one more")
        );
        assert_eq!(keys(&next), (vec!["5".to_owned()], None));
    }

    #[test]
    fn bad_queries_say_what_is_wrong() {
        for (query, says) in [
            ("[1]", "JSON object"),
            ("{", "not JSON"),
            (r#"{"filter":{"LIKE":{"a":1}}}"#, "unknown filter operator 'LIKE'"),
            (r#"{"filter":{"EQ":{"a":1,"b":2}}}"#, "exactly one field"),
            (r#"{"filter":{"IN":{"a":1}}}"#, "list of values"),
            (r#"{"filter":{"AND":[]}}"#, "at least one"),
            (r#"{"sort":[{"key":"a","order":"UP"}]}"#, "ASC or DESC"),
            (r#"{"page":{"limit":-1}}"#, "whole number"),
            (r#"{"page":{"token":"x"}}"#, "not a token"),
            (r#"{"select":1}"#, "unknown query field"),
        ] {
            let err = Query::parse(query).expect_err(query);
            assert!(err.contains(says), "{query}: {err}");
        }
        let deep = format!(r#"{{"filter":{}{}}}"#, "{\"AND\":[".repeat(40), "]}".repeat(40));
        assert!(Query::parse(&deep).is_err());
    }
}
