//! Plugins: apps, executors, filters and transformers, each chosen by name and configured by a
//! typed options struct that is parsed once.
//!
//! A plugin kind is a small trait implemented by the plugin's options type, as the Python suite's
//! `AppConfig.get_app()` / `ExecutorConfig.get_executor()`: the options build the thing and say
//! what it needs (see `app::AppConfig`, `executor::ExecutorConfig`, `data::FilterConfig`,
//! `data::TransformerConfig`). A [`Plugin`] entry names the options type; the configuration
//! keeps the parsed options as a [`Selected`].

use std::sync::Arc;

use crate::options::{FieldSpec, Options};

/// What every plugin's typed options can do, whatever the kind.
pub trait PluginOptions: std::fmt::Debug + Send + Sync + 'static {
    /// The options as written to `config.toml` (reading it back gives the same options).
    fn to_table(&self) -> toml::Table;
}

impl<O: Options> PluginOptions for O {
    fn to_table(&self) -> toml::Table {
        Options::to_table(self)
    }
}

/// A plugin of kind `K` (`dyn AppConfig`, `dyn ExecutorConfig`, …): its name, help and options.
pub struct Plugin<K: ?Sized + 'static> {
    /// Name used on the CLI and in TOML.
    pub name: &'static str,
    /// One-line description for `taps list` and help.
    pub about: &'static str,
    /// Its options, for help and flag parsing.
    pub fields: fn() -> Vec<FieldSpec>,
    /// Reads and validates a table of its options (`section` prefixes keys in errors).
    pub parse: fn(&toml::Table, &str) -> Result<Arc<K>, String>,
}

impl<K: ?Sized> Clone for Plugin<K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K: ?Sized> Copy for Plugin<K> {}

impl<K: ?Sized> Plugin<K> {
    /// Parses `t` into this plugin's options, remembering the plugin's name.
    pub fn select(&self, t: &toml::Table, section: &str) -> Result<Selected<K>, String> {
        Ok(Selected { name: self.name.to_string(), options: (self.parse)(t, section)? })
    }
}

/// Declares a plugin entry of a kind: `plugin!(dyn ExecutorConfig, ThreadPoolOptions, "thread-pool", "…")`.
#[macro_export]
macro_rules! plugin {
    ($kind:ty, $opts:ty, $name:expr, $about:expr $(,)?) => {{
        fn parse(t: &::toml::Table, section: &str) -> ::std::result::Result<::std::sync::Arc<$kind>, String> {
            Ok(::std::sync::Arc::new(<$opts as $crate::options::Options>::from_table(t, section)?))
        }
        $crate::plugins::Plugin::<$kind> {
            name: $name,
            about: $about,
            fields: <$opts as $crate::options::Options>::fields,
            parse,
        }
    }};
}

/// A chosen plugin and its parsed options.
pub struct Selected<K: ?Sized> {
    /// Plugin name.
    pub name: String,
    /// Its options (every field, defaults filled in).
    pub options: Arc<K>,
}

impl<K: ?Sized> Clone for Selected<K> {
    fn clone(&self) -> Self {
        Selected { name: self.name.clone(), options: self.options.clone() }
    }
}

impl<K: ?Sized + PluginOptions> Selected<K> {
    /// `name` followed by the options, as the plugin's table in `config.toml`.
    pub fn to_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("name".into(), toml::Value::String(self.name.clone()));
        t.extend(self.options.to_table());
        t
    }
}

impl<K: ?Sized + PluginOptions> std::fmt::Debug for Selected<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selected").field("name", &self.name).field("options", &self.options).finish()
    }
}

impl<K: ?Sized + PluginOptions> PartialEq for Selected<K> {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && self.options.to_table() == o.options.to_table()
    }
}

/// Plugins of the Python suite that taps does not have yet, by kind.
pub(crate) const NOT_YET: &[(&str, &[&str])] =
    &[("app", &[]), ("executor", &["globus", "taskvine"]), ("filter", &["pickle-size"]), ("transformer", &[])];

/// Finds a plugin by name; the error lists the valid names and the nearest one, or says that
/// the Python suite's plugin of that name is not implemented in taps yet.
pub fn find<'a, K: ?Sized>(kind: &str, list: &'a [Plugin<K>], name: &str) -> Result<&'a Plugin<K>, String> {
    list.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = list.iter().map(|p| p.name).collect();
        let not_yet = NOT_YET.iter().any(|(k, n)| *k == kind && n.contains(&name));
        if not_yet {
            return format!(
                "{} {:?} is not implemented in taps yet; available {}s: {}",
                kind,
                name,
                kind,
                names.join(", ")
            );
        }
        let mut msg = format!("unknown {} {:?}", kind, name);
        if let Some(s) = crate::options::did_you_mean(name, names.iter().copied()) {
            msg.push_str(&format!(" (did you mean {:?}?)", s));
        }
        msg.push_str(&format!("; valid {}s: {}", kind, names.join(", ")));
        msg
    })
}
