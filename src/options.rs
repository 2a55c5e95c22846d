//! Typed option sets for apps, executors, filters, transformers and the harness sections.
//!
//! [`options!`](macro@crate::options) declares a struct whose fields are read from a TOML table, from
//! `--section.field VALUE` flags, and written back to `config.toml`, with help text from the doc
//! comments. Every field type implements [`OptValue`], which knows how to read it from TOML and
//! from a CLI string and how to name its type in an error.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// A field as shown by `taps run --app X --help` and checked by the config loader.
#[derive(Clone, Debug)]
pub struct FieldSpec {
    /// Key (underscores).
    pub name: &'static str,
    /// Type as shown to users.
    pub ty: String,
    /// Default value rendered as TOML, or None if the field is required.
    pub default: Option<String>,
    /// One-line description.
    pub doc: &'static str,
    /// Parses a CLI string into the TOML value for this field.
    pub parse_cli: fn(&str) -> Result<toml::Value, String>,
}

/// A set of options read from one TOML table.
pub trait Options: Sized + Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The fields, in declaration order.
    fn fields() -> Vec<FieldSpec>;
    /// Reads the options; `section` prefixes keys in error messages.
    fn from_table(t: &toml::Table, section: &str) -> Result<Self, String>;
    /// The table written to `config.toml`, in field order: every key but those [`omitted`]
    /// (reading it back gives the same options).
    fn to_table(&self) -> toml::Table;
}

/// Cross-field checks of an option set, run after every field is read (e.g. the block size
/// divides the matrix size). An [`options!`](macro@crate::options) struct needs no impl when it has no
/// such check; with one, `from_table` calls it.
pub trait Validate {
    /// An error message naming the keys and what is allowed.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A type usable as an option value.
pub trait OptValue: Sized {
    /// Type name for help and errors, e.g. `integer`, `float`, `path`.
    fn type_name() -> String;
    /// Reads from a TOML value; the error says what was expected.
    fn from_toml(v: &toml::Value) -> Result<Self, String>;
    /// Writes as a TOML value.
    fn to_toml(&self) -> toml::Value;
    /// Reads from a CLI string.
    fn from_cli(s: &str) -> Result<Self, String>;
}

/// Parses a CLI string into a TOML value for `T` (used in [`FieldSpec::parse_cli`]).
pub fn parse_cli_value<T: OptValue>(s: &str) -> Result<toml::Value, String> {
    T::from_cli(s).map(|v| v.to_toml())
}

/// Describes a TOML value for an error message: its type and value.
pub fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("string {:?}", s),
        toml::Value::Integer(i) => format!("integer {}", i),
        toml::Value::Float(f) => format!("float {}", f),
        toml::Value::Boolean(b) => format!("boolean {}", b),
        toml::Value::Datetime(d) => format!("datetime {}", d),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

fn expected<T>(what: &str, v: &toml::Value) -> Result<T, String> {
    Err(format!("expected {}, got {}", what, describe(v)))
}

macro_rules! int_opt {
    ($($t:ty => $name:literal),*) => {$(
        impl OptValue for $t {
            fn type_name() -> String { $name.into() }
            /// An integer, a float with no fractional part or an integer string, as the Python
            /// suite's validation accepts.
            fn from_toml(v: &toml::Value) -> Result<Self, String> {
                match v {
                    toml::Value::Integer(i) => <$t>::try_from(*i).map_err(|_| format!("expected {}, got {} (out of range)", $name, i)),
                    toml::Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => {
                        <$t>::try_from(*f as i64).map_err(|_| format!("expected {}, got {} (out of range)", $name, f))
                    }
                    toml::Value::String(s) => Self::from_cli(s),
                    _ => expected($name, v),
                }
            }
            fn to_toml(&self) -> toml::Value { toml::Value::Integer(*self as i64) }
            /// Values that TOML cannot hold (above 2^63 - 1) are refused here, not wrapped.
            fn from_cli(s: &str) -> Result<Self, String> {
                let t = s.trim().replace('_', "");
                let v = t.parse::<i128>().map_err(|_| format!("expected {}, got {:?}", $name, s))?;
                i64::try_from(v)
                    .ok()
                    .and_then(|i| <$t>::try_from(i).ok())
                    .ok_or_else(|| format!("expected {} from {} to {}, got {}", $name, <$t>::MIN, (<$t>::MAX as i128).min(i64::MAX as i128), s.trim()))
            }
        }
    )*};
}
int_opt!(u64 => "non-negative integer", usize => "non-negative integer", u32 => "non-negative integer", i64 => "integer");

impl OptValue for f64 {
    fn type_name() -> String {
        "float".into()
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Float(f) => Ok(*f),
            toml::Value::Integer(i) => Ok(*i as f64),
            toml::Value::String(s) => Self::from_cli(s),
            _ => expected("float", v),
        }
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::Float(*self)
    }
    fn from_cli(s: &str) -> Result<Self, String> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "inf" | "+inf" | "infinity" => Ok(f64::INFINITY),
            _ => t.parse::<f64>().ok().filter(|f| !f.is_nan()).ok_or_else(|| format!("expected float, got {:?}", s)),
        }
    }
}

/// Booleans as the Python suite's validation (pydantic) reads them: true/false, yes/no, on/off,
/// 1/0, t/f, y/n in any case; in TOML also the integers 0 and 1.
impl OptValue for bool {
    fn type_name() -> String {
        "true|false".into()
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Boolean(b) => Ok(*b),
            toml::Value::Integer(0) => Ok(false),
            toml::Value::Integer(1) => Ok(true),
            toml::Value::String(s) => Self::from_cli(s),
            _ => expected("true or false", v),
        }
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::Boolean(*self)
    }
    fn from_cli(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" | "t" | "y" => Ok(true),
            "false" | "no" | "0" | "off" | "f" | "n" => Ok(false),
            _ => Err(format!("expected true or false (also yes/no, on/off, 1/0), got {:?}", s)),
        }
    }
}

impl OptValue for String {
    fn type_name() -> String {
        "string".into()
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            _ => expected("string", v),
        }
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.clone())
    }
    fn from_cli(s: &str) -> Result<Self, String> {
        Ok(s.to_string())
    }
}

impl OptValue for PathBuf {
    fn type_name() -> String {
        "path".into()
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => Self::from_cli(s),
            _ => expected("path (string)", v),
        }
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.display().to_string())
    }
    /// Relative paths are made absolute against the launch directory, as in the Python suite.
    fn from_cli(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("expected a path, got an empty string".into());
        }
        std::path::absolute(s).map_err(|e| format!("cannot resolve path {:?}: {}", s, e))
    }
}

/// `none` (on the CLI or as a TOML string) is None; anything else is read as `T`.
impl<T: OptValue> OptValue for Option<T> {
    fn type_name() -> String {
        format!("{}|none", T::type_name())
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) if s.eq_ignore_ascii_case("none") => Ok(None),
            _ => T::from_toml(v).map(Some),
        }
    }
    fn to_toml(&self) -> toml::Value {
        match self {
            None => toml::Value::String("none".into()),
            Some(v) => v.to_toml(),
        }
    }
    fn from_cli(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("none") { Ok(None) } else { T::from_cli(s).map(Some) }
    }
}

/// A list: a TOML array, or on the CLI a JSON list or comma-separated values.
impl OptValue for Vec<String> {
    fn type_name() -> String {
        "list of strings".into()
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Array(a) => a.iter().map(String::from_toml).collect(),
            toml::Value::String(s) => Self::from_cli(s),
            _ => expected("an array of strings", v),
        }
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::Array(self.iter().map(|s| toml::Value::String(s.clone())).collect())
    }
    fn from_cli(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.starts_with('[') {
            serde_json::from_str(t).map_err(|e| format!("expected a JSON list of strings, got {:?} ({})", s, e))
        } else if t.is_empty() {
            Ok(Vec::new())
        } else {
            Ok(t.split(',').map(|p| p.trim().to_string()).collect())
        }
    }
}

/// A string map: a TOML table, or on the CLI a JSON object (`'{"A": "x"}'`) or
/// `KEY=VALUE,KEY=VALUE`. Repeated flags merge (see [`combine`]).
impl OptValue for BTreeMap<String, String> {
    fn type_name() -> String {
        "map of strings (JSON object or KEY=VALUE,...)".into()
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Table(t) => t
                .iter()
                .map(|(k, v)| match v {
                    toml::Value::String(s) => Ok((k.clone(), s.clone())),
                    toml::Value::Integer(i) => Ok((k.clone(), i.to_string())),
                    toml::Value::Float(f) => Ok((k.clone(), f.to_string())),
                    toml::Value::Boolean(b) => Ok((k.clone(), b.to_string())),
                    other => Err(format!("key {:?}: expected a string, got {}", k, describe(other))),
                })
                .collect(),
            toml::Value::String(s) => Self::from_cli(s),
            _ => expected("a table of strings", v),
        }
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::Table(self.iter().map(|(k, v)| (k.clone(), toml::Value::String(v.clone()))).collect())
    }
    fn from_cli(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.starts_with('{') {
            return Self::from_toml(&toml::Value::Table(json_to_toml_table(s)?));
        }
        t.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => Ok((k.trim().to_string(), v.to_string())),
                None => Err(format!("expected a JSON object or KEY=VALUE,KEY=VALUE, got {:?}", s)),
            })
            .collect()
    }
}

/// A free-form table (e.g. the failures app's base config): TOML table or JSON object.
impl OptValue for toml::Table {
    fn type_name() -> String {
        "table (JSON object on the CLI)".into()
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Table(t) => Ok(t.clone()),
            toml::Value::String(s) => Self::from_cli(s),
            _ => expected("a table", v),
        }
    }
    fn to_toml(&self) -> toml::Value {
        toml::Value::Table(self.clone())
    }
    fn from_cli(s: &str) -> Result<Self, String> {
        json_to_toml_table(s)
    }
}

/// Parses a JSON object into a TOML table (null values are dropped).
pub(crate) fn json_to_toml_table(s: &str) -> Result<toml::Table, String> {
    let j: serde_json::Value =
        serde_json::from_str(s.trim()).map_err(|e| format!("expected a JSON object, got {:?} ({})", s, e))?;
    match json_to_toml(&j) {
        Some(toml::Value::Table(t)) => Ok(t),
        _ => Err(format!("expected a JSON object, got {:?}", s)),
    }
}

fn json_to_toml(j: &serde_json::Value) -> Option<toml::Value> {
    Some(match j {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => toml::Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        serde_json::Value::String(s) => toml::Value::String(s.clone()),
        serde_json::Value::Array(a) => toml::Value::Array(a.iter().filter_map(json_to_toml).collect()),
        serde_json::Value::Object(o) => {
            toml::Value::Table(o.iter().filter_map(|(k, v)| Some((k.clone(), json_to_toml(v)?))).collect())
        }
    })
}

/// Declares an enum option: `opt_enum!(pub enum Structure { Bag = "bag", Diamond = "diamond" })`.
/// Values are matched case-insensitively; help lists them.
#[macro_export]
macro_rules! opt_enum {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name { $($(#[$vm])* #[serde(rename = $s)] $variant),+ }
        impl $name {
            /// Every value, in declaration order.
            #[allow(dead_code)]
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The value's name as written in configs.
            pub fn as_str(&self) -> &'static str { match self { $($name::$variant => $s),+ } }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
        impl $crate::options::OptValue for $name {
            fn type_name() -> String { [$($s),+].join("|") }
            fn from_toml(v: &toml::Value) -> Result<Self, String> {
                match v {
                    toml::Value::String(s) => Self::from_cli(s),
                    _ => Err(format!("expected one of {}, got {}", Self::type_name(), $crate::options::describe(v))),
                }
            }
            fn to_toml(&self) -> toml::Value { toml::Value::String(self.as_str().into()) }
            fn from_cli(s: &str) -> Result<Self, String> {
                let t = s.trim().to_ascii_lowercase().replace('_', "-");
                $(if t == $s { return Ok($name::$variant); })+
                Err(format!("expected one of {}, got {:?}", Self::type_name(), s))
            }
        }
    };
}

/// Declares an option struct. Each field has a doc comment (its help line), a type implementing
/// [`OptValue`] and, unless it is required, a default. A field without a default is required;
/// `#[required]` also marks a field as required while it keeps a default for Rust code (the
/// struct's `Default`, which exists when every field has a default). `#[skip_default]` fields
/// (taps-only keys) are written to `config.toml` only when they differ from their default (see
/// [`omitted`]). Cross-field checks go in an `impl Validate` (see [`Validate`]); a struct without
/// one has none.
///
/// ```
/// taps::options! {
///     /// Options of a doc example.
///     pub struct ExampleOptions {
///         /// Number of things.
///         count: u64,
///         /// Seconds to wait.
///         sleep: f64 = 0.5,
///     }
/// }
/// use taps::options::Options;
/// let t: toml::Table = toml::from_str("count = 3").unwrap();
/// let o = ExampleOptions::from_table(&t, "app").unwrap();
/// assert_eq!((o.count, o.sleep), (3, 0.5));
/// assert!(ExampleOptions::from_table(&toml::Table::new(), "app").unwrap_err().contains("app.count"));
/// ```
#[macro_export]
macro_rules! options {
    (
        $(#[$m:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $(#[$req:ident])?
                $field:ident : $ty:ty $(= $default:expr)?
            ),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq)]
        $vis struct $name {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
        }

        $crate::__options_default!($name; []; $($field $(= $default)?,)*);

        impl $crate::options::Options for $name {
            fn fields() -> Vec<$crate::options::FieldSpec> {
                vec![$(
                    $crate::options::FieldSpec {
                        name: stringify!($field),
                        ty: <$ty as $crate::options::OptValue>::type_name(),
                        default: if $crate::__is_required!($($req)?) { None } else {
                            $crate::__option_default!($ty; $($default)?)
                                .map(|d| $crate::options::render(&$crate::options::OptValue::to_toml(&d)))
                        },
                        doc: $crate::__first_doc!($($doc)+),
                        parse_cli: $crate::options::parse_cli_value::<$ty>,
                    },
                )*]
            }

            #[allow(unused_mut, unused_variables)]
            fn from_table(t: &toml::Table, section: &str) -> Result<Self, String> {
                let known: &[&str] = &[$(stringify!($field)),*];
                for k in t.keys() {
                    if k != "name" && !known.contains(&k.as_str()) {
                        return Err($crate::options::unknown_key(section, k, known));
                    }
                }
                let out = $name {$(
                    $field: match t.get(stringify!($field)) {
                        Some(v) => <$ty as $crate::options::OptValue>::from_toml(v).map_err(|e| {
                            format!("{}.{}: {}", section, stringify!($field), e)
                        })?,
                        None => match $crate::__option_default!($ty; $($default)?) {
                            Some(d) if !$crate::__is_required!($($req)?) => d,
                            _ => return Err($crate::options::required_error(
                                section, stringify!($field), &<$ty as $crate::options::OptValue>::type_name(),
                            )),
                        },
                    },
                )*};
                {
                    // Calls `Validate::validate` if the struct implements it, else nothing (method
                    // resolution prefers the by-reference impl, which exists only with `Validate`).
                    #[allow(unused_imports)]
                    use $crate::options::{__NoValidate, __WithValidate};
                    (&out).__validate()?;
                }
                Ok(out)
            }

            #[allow(unused_mut, unused_variables)]
            fn to_table(&self) -> toml::Table {
                let mut t = toml::Table::new();
                $(
                    let v = $crate::options::OptValue::to_toml(&self.$field);
                    let default = $crate::__option_default!($ty; $($default)?).map(|d| $crate::options::OptValue::to_toml(&d));
                    if !default.is_some_and(|d| $crate::options::omitted(&v, &d, $crate::__is_skip_default!($($req)?))) {
                        t.insert(stringify!($field).into(), v);
                    }
                )*
                t
            }
        }
    };
}

/// Used by [`options!`](macro@crate::options): calls [`Validate::validate`] on a struct that implements it.
#[doc(hidden)]
pub trait __WithValidate {
    fn __validate(&self) -> Result<(), String>;
}

impl<T: Validate> __WithValidate for T {
    fn __validate(&self) -> Result<(), String> {
        self.validate()
    }
}

/// Used by [`options!`](macro@crate::options): no check for a struct without [`Validate`].
#[doc(hidden)]
pub trait __NoValidate {
    fn __validate(&self) -> Result<(), String>;
}

impl<T> __NoValidate for &T {
    fn __validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// `Some(default)` of a field, or `None` for a field declared without one.
#[doc(hidden)]
#[macro_export]
macro_rules! __option_default {
    ($ty:ty;) => {
        None::<$ty>
    };
    ($ty:ty; $default:expr) => {
        Some::<$ty>($default)
    };
}

/// `impl Default` for an option struct whose fields all have defaults; nothing otherwise.
#[doc(hidden)]
#[macro_export]
macro_rules! __options_default {
    ($name:ident; [$($done:tt)*];) => {
        impl Default for $name {
            fn default() -> Self {
                $name { $($done)* }
            }
        }
    };
    ($name:ident; [$($done:tt)*]; $field:ident = $default:expr, $($rest:tt)*) => {
        $crate::__options_default!($name; [$($done)* $field: $default,]; $($rest)*);
    };
    ($name:ident; [$($done:tt)*]; $field:ident, $($rest:tt)*) => {};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __is_required {
    () => {
        false
    };
    (required) => {
        true
    };
    (skip_default) => {
        false
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __is_skip_default {
    () => {
        false
    };
    (required) => {
        false
    };
    (skip_default) => {
        true
    };
}

/// The longest wait an option may ask for, in seconds (about 3·10¹⁰ years): longer ones overflow
/// the clock (`Instant + Duration`) and cannot run.
pub(crate) const MAX_SECONDS: f64 = 1e18;

/// Checks a duration option: a finite number of seconds in `[0, max]`.
pub(crate) fn check_seconds(key: &str, v: f64, max: f64) -> Result<(), String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{} must be a finite number >= 0, got {}", key, v));
    }
    if v > max {
        return Err(format!(
            "{} must be at most {:e} seconds (longer waits overflow the clock), got {:e}",
            key, max, v
        ));
    }
    Ok(())
}

/// Whether [`Options::to_table`] leaves a key out of `config.toml`: a none whose default is none
/// (as the Python suite writes it), and a `#[skip_default]` (taps-only) key equal to its default,
/// so a run that uses only the Python suite's options writes a file that suite can read.
/// Reading the file back gives the same value either way.
pub fn omitted(v: &toml::Value, default: &toml::Value, skip_default: bool) -> bool {
    let none = |v: &toml::Value| matches!(v, toml::Value::String(s) if s == "none");
    (skip_default && v == default) || (none(v) && none(default))
}

/// The error for a missing required key, with how to set it: a flag for the sections that have
/// flags, a JSON object for a table option such as the failures app's `app.config`.
pub fn required_error(section: &str, field: &str, ty: &str) -> String {
    let flagged = matches!(
        section,
        "app" | "engine" | "engine.executor" | "engine.filter" | "engine.transformer" | "logging" | "run"
    );
    let how = if flagged {
        format!("--{}.{} VALUE", section, field.replace('_', "-"))
    } else {
        format!("--{} '{{\"{}\": VALUE}}'", section.replace('_', "-"), field)
    };
    format!("{}.{} is required ({}): set it with {} or in the [{}] table", section, field, ty, how, section)
}

/// Combines a repeated CLI flag with its earlier value: lists append, maps and tables merge (later
/// keys win), anything else is replaced, as the Python suite's CLI does.
pub(crate) fn combine(old: toml::Value, new: toml::Value) -> toml::Value {
    match (old, new) {
        (toml::Value::Array(mut a), toml::Value::Array(b)) => {
            a.extend(b);
            toml::Value::Array(a)
        }
        (toml::Value::Table(mut a), toml::Value::Table(b)) => {
            a.extend(b);
            toml::Value::Table(a)
        }
        (_, new) => new,
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __first_doc {
    ($first:literal $($rest:literal)*) => {
        $first.trim_start()
    };
}

/// Renders a TOML value on one line (for help and messages).
pub fn render(v: &toml::Value) -> String {
    match v {
        toml::Value::Float(f) if f.is_infinite() => "inf".into(),
        toml::Value::Table(t) if t.is_empty() => "{}".into(),
        toml::Value::String(s) if s == "none" => "none".into(),
        other => {
            let s = other.to_string();
            s.trim().to_string()
        }
    }
}

/// The error for an unknown key: names the section, the valid keys and the nearest one.
pub fn unknown_key(section: &str, key: &str, known: &[&str]) -> String {
    let full = |k: &str| {
        if section.is_empty() { k.to_string() } else { format!("{}.{}", section, k) }
    };
    let mut msg = format!("unknown option {}", full(key));
    if let Some(s) = did_you_mean(key, known.iter().copied()) {
        msg.push_str(&format!(" (did you mean {}?)", full(s)));
    }
    if known.is_empty() {
        msg.push_str(&format!("; [{}] takes no options", section));
    } else {
        msg.push_str(&format!("; valid options: {}", known.join(", ")));
    }
    msg
}

/// The candidate closest to `s`, if it is close enough to be a typo.
pub(crate) fn did_you_mean<'a>(s: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let norm = |x: &str| x.to_ascii_lowercase().replace('-', "_");
    let s = norm(s);
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&s, &norm(c)), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::{Options, Validate};

    crate::options! {
        /// Options with a required field and no cross-field check (no `Validate` impl).
        pub(crate) struct Plain {
            /// Required, no default.
            count: u64,
            /// Optional.
            sleep: f64 = 0.5,
        }
    }

    crate::options! {
        /// Options with a cross-field check.
        pub(crate) struct Checked {
            /// Low end.
            low: u64 = 0,
            /// High end.
            high: u64 = 10,
        }
    }

    impl Validate for Checked {
        fn validate(&self) -> Result<(), String> {
            if self.low > self.high { Err("app.low must be at most app.high".into()) } else { Ok(()) }
        }
    }

    fn table(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn a_field_without_a_default_is_required_and_has_no_default_in_help() {
        let err = Plain::from_table(&toml::Table::new(), "app").unwrap_err();
        assert!(err.starts_with("app.count is required (non-negative integer)"), "{}", err);
        let o = Plain::from_table(&table("count = 3"), "app").unwrap();
        assert_eq!((o.count, o.sleep), (3, 0.5));
        let help: Vec<_> = Plain::fields().into_iter().map(|f| (f.name, f.default)).collect();
        assert_eq!(help, vec![("count", None), ("sleep", Some("0.5".to_string()))]);
        // The required field is always written; the others too (none is a none default).
        let t = o.to_table();
        assert_eq!(Plain::from_table(&t, "app").unwrap(), o);
        assert_eq!(t.keys().collect::<Vec<_>>(), vec!["count", "sleep"]);
    }

    #[test]
    fn validate_runs_when_implemented() {
        assert_eq!(Checked::from_table(&table("low = 11"), "app").unwrap_err(), "app.low must be at most app.high");
        assert_eq!(Checked::default(), Checked { low: 0, high: 10 });
        assert!(Checked::from_table(&table("low = 10"), "app").is_ok());
    }
}
