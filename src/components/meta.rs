//! Typed component metadata.
//!
//! A component's metadata arrives as strings (Dapr's `name`/`value` pairs,
//! Layotto's JSON `metadata` object). Each component type declares what it
//! reads as a serde struct, one doc comment per field, spelled as Dapr
//! spells the keys, with its defaults written once, in serde attributes.
//! [`parse`] turns the strings into that struct: numbers, booleans and
//! [`Seconds`] durations are parsed from their text, and every key that no
//! section of the struct reads is reported as unknown. Validation runs the
//! same parse (so `layotto validate` lists every problem with its key) and
//! the build receives the parsed value.
//!
//! Metadata made of several parts (the Redis connection keys shared by
//! every Redis component, plus the keys of one type) is a tuple of the
//! parts, or a [`Metadata`] implementation that reads each part with
//! [`Parser::section`].

/// How a metadata key a type does not read is reported.
pub const UNKNOWN_KEY: &str = "is not a key of this type";

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, IntoDeserializer, MapAccess, Visitor};

use super::{ComponentSpec, MetadataError};

/// A component type's metadata.
pub trait Metadata: Sized + Send + Sync + 'static {
    /// Reads every section of the metadata; `None` when a section could
    /// not be read (the parser holds the errors).
    fn read(parser: &mut Parser<'_>) -> Option<Self>;

    /// Checks that span several keys, after every key parsed.
    fn check(&self, _errors: &mut Vec<MetadataError>) {}
}

/// Metadata of one section: any serde struct.
impl<T: DeserializeOwned + Send + Sync + 'static + Section> Metadata for T {
    fn read(parser: &mut Parser<'_>) -> Option<Self> {
        parser.section()
    }

    fn check(&self, errors: &mut Vec<MetadataError>) {
        Section::check(self, errors)
    }
}

/// A serde struct read as one section of the metadata.
pub trait Section {
    /// Checks that span several keys of this section.
    fn check(&self, _errors: &mut Vec<MetadataError>) {}
}

/// Metadata made of two parts, each read from the same map.
impl<A: Metadata, B: Metadata> Metadata for (A, B) {
    fn read(parser: &mut Parser<'_>) -> Option<Self> {
        let a = A::read(parser);
        let b = B::read(parser);
        Some((a?, b?))
    }

    fn check(&self, errors: &mut Vec<MetadataError>) {
        self.0.check(errors);
        self.1.check(errors);
    }
}

/// Metadata made of three parts, each read from the same map.
impl<A: Metadata, B: Metadata, C: Metadata> Metadata for (A, B, C) {
    fn read(parser: &mut Parser<'_>) -> Option<Self> {
        let a = A::read(parser);
        let b = B::read(parser);
        let c = C::read(parser);
        Some((a?, b?, c?))
    }

    fn check(&self, errors: &mut Vec<MetadataError>) {
        self.0.check(errors);
        self.1.check(errors);
        self.2.check(errors);
    }
}

/// No metadata at all: any key is unknown.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct NoMetadata {}

impl Section for NoMetadata {}

/// Reads sections of one component's metadata, collecting the keys they
/// know and the problems they find.
pub struct Parser<'a> {
    metadata: &'a BTreeMap<String, String>,
    known: BTreeSet<&'static str>,
    /// Prefixes of families of keys (`biggerThan.<key>`).
    known_prefixes: BTreeSet<&'static str>,
    /// Keys no section reads are accepted.
    free_form: bool,
    errors: Vec<MetadataError>,
}

impl<'a> Parser<'a> {
    pub fn new(metadata: &'a BTreeMap<String, String>) -> Self {
        Parser {
            metadata,
            known: BTreeSet::new(),
            known_prefixes: BTreeSet::new(),
            free_form: false,
            errors: Vec::new(),
        }
    }

    /// Reads a family of keys named `<prefix><name>`, each value parsed as
    /// `T`, into a map by `<name>`. A value that does not parse is
    /// reported with its key, as `what` it should be.
    pub fn prefixed<T: std::str::FromStr>(&mut self, prefix: &'static str, what: &str) -> BTreeMap<String, T> {
        self.known_prefixes.insert(prefix);
        let mut out = BTreeMap::new();
        for (key, value) in self
            .metadata
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
        {
            let Some(name) = key.strip_prefix(prefix) else {
                break;
            };
            match value.trim().parse() {
                Ok(parsed) if !name.is_empty() => {
                    out.insert(name.to_owned(), parsed);
                }
                Ok(_) => self.error(key, format!("name a key after '{prefix}'")),
                Err(_) => self.error(key, format!("'{}' is not {what}", super::quote(value))),
            }
        }
        out
    }

    /// Accepts keys that no section reads, for a type whose metadata is
    /// free-form beside the keys it reads.
    pub fn accept_other_keys(&mut self) {
        self.free_form = true;
    }

    fn is_known(&self, key: &str) -> bool {
        self.free_form || self.known.contains(key) || self.known_prefixes.iter().any(|p| key.starts_with(p))
    }

    /// Reads one section. A value that does not parse is reported with its
    /// key, and the section is read again without it so that every bad
    /// value is reported at once.
    pub fn section<T: DeserializeOwned>(&mut self) -> Option<T> {
        let mut skipped: BTreeSet<&str> = BTreeSet::new();
        loop {
            let fields = RefCell::new(None);
            let failed_key = RefCell::new(None);
            let result = T::deserialize(MapDeserializer {
                metadata: self.metadata,
                skipped: &skipped,
                fields: &fields,
                failed_key: &failed_key,
            });
            if let Some(fields) = fields.into_inner() {
                self.known.extend(fields.iter().copied());
            }
            match result {
                Ok(value) if skipped.is_empty() => return Some(value),
                Ok(_) => return None,
                Err(error) => {
                    let key = failed_key.into_inner();
                    match key {
                        Some(key) if !skipped.contains(key.as_str()) => {
                            self.errors.push(MetadataError::new(&key, error.0));
                            let (stored, _) = self.metadata.get_key_value(&key)?;
                            skipped.insert(stored.as_str());
                        }
                        _ => {
                            let (key, message) = split_missing(&error.0);
                            self.errors.push(MetadataError::new(key, message));
                            return None;
                        }
                    }
                }
            }
        }
    }

    /// Reports `key` with `message`.
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        self.errors.push(MetadataError::new(key, message));
    }
}

/// Turns serde's "missing field `x`" into the key and "is required".
fn split_missing(message: &str) -> (&str, String) {
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(key) = rest.strip_suffix('`')
    {
        return (key, "is required".to_owned());
    }
    ("metadata", message.to_owned())
}

/// Parses a component's metadata into `M`, or lists every problem: values
/// that do not parse, required keys that are missing, unknown keys.
pub fn parse<M: Metadata>(spec: &ComponentSpec) -> Result<M, Vec<MetadataError>> {
    parse_map(&spec.metadata)
}

/// [`parse`] for a build: keys no section reads are left alone. At start-up
/// the metadata also holds the values injected from secret stores, which
/// validation could not see; a key that the config names is checked by
/// validation.
pub fn parse_for_build<M: Metadata>(spec: &ComponentSpec) -> Result<M, Vec<MetadataError>> {
    read(&spec.metadata, false)
}

/// [`parse`] over a bare map.
pub fn parse_map<M: Metadata>(metadata: &BTreeMap<String, String>) -> Result<M, Vec<MetadataError>> {
    read(metadata, true)
}

fn read<M: Metadata>(metadata: &BTreeMap<String, String>, report_unknown: bool) -> Result<M, Vec<MetadataError>> {
    let mut parser = Parser::new(metadata);
    let parsed = M::read(&mut parser);
    let mut errors = std::mem::take(&mut parser.errors);
    if errors.is_empty() && report_unknown {
        for key in metadata.keys() {
            if !parser.is_known(key) {
                let known: Vec<String> = parser
                    .known
                    .iter()
                    .map(|k| (*k).to_owned())
                    .chain(parser.known_prefixes.iter().map(|p| format!("{p}<key>")))
                    .collect();
                let hint = if known.is_empty() {
                    "this type takes no metadata".to_owned()
                } else {
                    format!("known keys: {}", known.join(", "))
                };
                errors.push(MetadataError::new(key, format!("{UNKNOWN_KEY}; {hint}")));
            }
        }
    }
    match parsed {
        Some(parsed) if errors.is_empty() => {
            parsed.check(&mut errors);
            if errors.is_empty() { Ok(parsed) } else { Err(errors) }
        }
        _ => Err(errors),
    }
}

/// For `#[serde(deserialize_with)]` on a required text key: a blank value
/// is as good as none.
pub fn non_empty<'de, D: de::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    if text.trim().is_empty() {
        return Err(de::Error::custom("is required"));
    }
    Ok(text)
}

/// The checks `layotto validate` runs for a type whose metadata is `M`.
pub fn validate<M: Metadata>(spec: &ComponentSpec) -> Vec<MetadataError> {
    parse::<M>(spec).err().unwrap_or_default()
}

/// A duration written as a number of seconds (`"30"`) or with a unit
/// (`"30s"`, `"1m"`, `"250ms"`), as Dapr's metadata writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Seconds(pub Duration);

impl Seconds {
    pub const fn secs(secs: u64) -> Seconds {
        Seconds(Duration::from_secs(secs))
    }

    pub const fn millis(ms: u64) -> Seconds {
        Seconds(Duration::from_millis(ms))
    }
}

impl From<Seconds> for Duration {
    fn from(s: Seconds) -> Duration {
        s.0
    }
}

impl std::str::FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Seconds, String> {
        let text = text.trim();
        match text.parse::<u64>() {
            Ok(secs) => Ok(Seconds(Duration::from_secs(secs))),
            Err(_) => humantime::parse_duration(text)
                .map(Seconds)
                .map_err(|_| format!("'{text}' is not a duration such as \"30s\" or a number of seconds")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Seconds {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Seconds, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// Why a value did not parse.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// The metadata map as a serde map of strings.
struct MapDeserializer<'a, 'b> {
    metadata: &'a BTreeMap<String, String>,
    skipped: &'b BTreeSet<&'a str>,
    /// The field names of the struct being read: the keys it knows.
    fields: &'b RefCell<Option<&'static [&'static str]>>,
    /// The key whose value failed to parse.
    failed_key: &'b RefCell<Option<String>>,
}

impl<'de, 'a, 'b> de::Deserializer<'de> for MapDeserializer<'a, 'b> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(Entries {
            iter: self.metadata.iter(),
            skipped: self.skipped,
            wanted: None,
            value: None,
            failed_key: self.failed_key,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        *self.fields.borrow_mut() = Some(fields);
        visitor.visit_map(Entries {
            iter: self.metadata.iter(),
            skipped: self.skipped,
            wanted: Some(fields),
            value: None,
            failed_key: self.failed_key,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct enum identifier ignored_any
    }
}

struct Entries<'a, 'b> {
    iter: std::collections::btree_map::Iter<'a, String, String>,
    skipped: &'b BTreeSet<&'a str>,
    /// Only these keys (a struct's fields), when set.
    wanted: Option<&'static [&'static str]>,
    value: Option<(&'a str, &'a str)>,
    failed_key: &'b RefCell<Option<String>>,
}

impl<'de, 'a, 'b> MapAccess<'de> for Entries<'a, 'b> {
    type Error = Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        for (key, value) in self.iter.by_ref() {
            if self.skipped.contains(key.as_str()) {
                continue;
            }
            if let Some(wanted) = self.wanted
                && !wanted.contains(&key.as_str())
            {
                continue;
            }
            self.value = Some((key, value));
            return seed.deserialize(key.as_str().into_deserializer()).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((key, value)) = self.value.take() else {
            return Err(Error("a value without a key".into()));
        };
        seed.deserialize(Text(value)).inspect_err(|_| {
            *self.failed_key.borrow_mut() = Some(key.to_owned());
        })
    }
}

/// One metadata value: text that numbers and booleans are parsed from.
struct Text<'a>(&'a str);

impl Text<'_> {
    fn parse<T: std::str::FromStr>(&self, what: &str) -> Result<T, Error> {
        self.0
            .trim()
            .parse()
            .map_err(|_| Error(format!("'{}' is not {what}", super::quote(self.0))))
    }
}

macro_rules! parse_number {
    ($($method:ident $visit:ident $ty:ty, $what:literal;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                visitor.$visit(self.parse::<$ty>($what)?)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Text<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str(self.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0.trim().to_ascii_lowercase().as_str() {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            _ => Err(Error(format!("'{}' is not true or false", super::quote(self.0)))),
        }
    }

    parse_number! {
        deserialize_i8 visit_i8 i8, "a whole number";
        deserialize_i16 visit_i16 i16, "a whole number";
        deserialize_i32 visit_i32 i32, "a whole number";
        deserialize_i64 visit_i64 i64, "a whole number";
        deserialize_u8 visit_u8 u8, "a whole number of 0 or more";
        deserialize_u16 visit_u16 u16, "a whole number of 0 or more";
        deserialize_u32 visit_u32 u32, "a whole number of 0 or more";
        deserialize_u64 visit_u64 u64, "a whole number of 0 or more";
        deserialize_f32 visit_f32 f32, "a number";
        deserialize_f64 visit_f64 f64, "a number";
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(self.0.into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test metadata.
    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Sample {
        /// Required.
        host: String,
        /// A number with a default.
        #[serde(default = "default_pool")]
        pool_size: u32,
        /// A duration.
        #[serde(default)]
        timeout: Option<Seconds>,
        /// A flag.
        #[serde(default, rename = "enableTLS")]
        enable_tls: bool,
    }

    fn default_pool() -> u32 {
        4
    }

    impl Section for Sample {}

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn values_parse_from_text_with_defaults() {
        let parsed: Sample =
            parse_map(&map(&[("host", "h:1"), ("timeout", "250ms"), ("enableTLS", "true")])).expect("parses");
        assert_eq!(
            parsed,
            Sample {
                host: "h:1".into(),
                pool_size: 4,
                timeout: Some(Seconds::millis(250)),
                enable_tls: true,
            }
        );
        let parsed: Sample = parse_map(&map(&[("host", "h"), ("timeout", "30")])).expect("parses");
        assert_eq!(parsed.timeout, Some(Seconds::secs(30)));
    }

    #[test]
    fn every_bad_value_and_unknown_key_is_reported_with_its_key() {
        let errors = parse_map::<Sample>(&map(&[("host", "h"), ("poolSize", "many"), ("timeout", "soon")]))
            .expect_err("bad values");
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["poolSize", "timeout"], "{errors:?}");
        assert!(errors[0].message.contains("'many' is not"), "{errors:?}");

        let errors = parse_map::<Sample>(&map(&[("host", "h"), ("hots", "x")])).expect_err("unknown key");
        assert_eq!(errors[0].key, "hots");
        assert!(
            errors[0]
                .message
                .contains("known keys: enableTLS, host, poolSize, timeout"),
            "{errors:?}"
        );

        let errors = parse_map::<Sample>(&map(&[])).expect_err("missing key");
        assert_eq!(errors[0].key, "host");
        assert_eq!(errors[0].message, "is required");
    }

    /// Two sections sharing one map.
    #[derive(Debug)]
    struct Both {
        sample: Sample,
        extra: Extra,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Extra {
        #[serde(default)]
        extra: Option<String>,
    }

    impl Metadata for Both {
        fn read(parser: &mut Parser<'_>) -> Option<Self> {
            let sample = parser.section();
            let extra = parser.section();
            Some(Both {
                sample: sample?,
                extra: extra?,
            })
        }
    }

    #[test]
    fn sections_share_the_map_and_the_known_keys() {
        let both: Both = parse_map(&map(&[("host", "h"), ("extra", "e")])).expect("parses");
        assert_eq!(both.sample.host, "h");
        assert_eq!(both.extra.extra.as_deref(), Some("e"));
        let errors = parse_map::<Both>(&map(&[("host", "h"), ("other", "e")])).expect_err("unknown");
        assert_eq!(errors[0].key, "other");
    }

    #[test]
    fn no_metadata_refuses_any_key() {
        assert!(parse_map::<NoMetadata>(&map(&[])).is_ok());
        let errors = parse_map::<NoMetadata>(&map(&[("x", "1")])).expect_err("unknown");
        assert!(errors[0].message.contains("takes no metadata"), "{errors:?}");
    }

    /// A family of keys beside a section.
    #[derive(Debug)]
    struct Floors {
        extra: Extra,
        floors: BTreeMap<String, i64>,
    }

    impl Metadata for Floors {
        fn read(parser: &mut Parser<'_>) -> Option<Self> {
            let extra = parser.section();
            let floors = parser.prefixed("floor.", "a whole number");
            Some(Floors { extra: extra?, floors })
        }
    }

    #[test]
    fn a_family_of_keys_is_read_by_its_prefix() {
        let parsed: Floors = parse_map(&map(&[("floor.a", "5"), ("floor.b", " 7"), ("extra", "e")])).expect("parses");
        assert_eq!(
            parsed.floors,
            BTreeMap::from([("a".to_owned(), 5), ("b".to_owned(), 7)])
        );
        assert_eq!(parsed.extra.extra.as_deref(), Some("e"));
        let errors = parse_map::<Floors>(&map(&[("floor.a", "x")])).expect_err("bad value");
        assert_eq!(errors[0].key, "floor.a");
        let errors = parse_map::<Floors>(&map(&[("flor.a", "1")])).expect_err("unknown");
        assert!(
            errors[0].message.contains("known keys: extra, floor.<key>"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_build_leaves_keys_it_does_not_read_alone() {
        let spec = ComponentSpec::new("s", "t")
            .with_metadata("host", "h")
            .with_metadata("injected", "x");
        assert!(parse::<Sample>(&spec).is_err());
        assert_eq!(parse_for_build::<Sample>(&spec).expect("parses").host, "h");
    }
}
