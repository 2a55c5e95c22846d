//! Plugin tables: every app, executor, filter and transformer by name, with its options.

use crate::options::{FieldSpec, Options};

/// A named plugin and its option set.
#[derive(Clone, Copy)]
pub struct PluginInfo {
    /// Name used on the CLI and in TOML.
    pub name: &'static str,
    /// One-line description for `taps list` and help.
    pub about: &'static str,
    /// Its options.
    pub fields: fn() -> Vec<FieldSpec>,
    /// Reads and validates a table of its options; returns the complete table.
    pub normalize: fn(&toml::Table, &str) -> Result<toml::Table, String>,
}

fn normalize<O: Options>(t: &toml::Table, section: &str) -> Result<toml::Table, String> {
    O::from_table(t, section).map(|o| o.to_table())
}

impl PluginInfo {
    /// A plugin named `name` with options `O`.
    pub const fn new<O: Options>(name: &'static str, about: &'static str) -> Self {
        PluginInfo { name, about, fields: O::fields, normalize: normalize::<O> }
    }
}

/// Plugins of the Python suite that taps does not have yet, by kind.
pub const NOT_YET: &[(&str, &[&str])] = &[
    ("app", &["docking", "fedlearn", "moldesign", "montage", "physics"]),
    ("executor", &["dask", "globus", "parsl-htex", "parsl-local", "ray", "taskvine"]),
    ("filter", &["pickle-size"]),
    ("transformer", &["proxystore"]),
];

/// Finds a plugin by name; the error lists the valid names and the nearest one, or says that
/// the Python suite's plugin of that name is not implemented in taps yet.
pub fn find<'a>(kind: &str, list: &'a [PluginInfo], name: &str) -> Result<&'a PluginInfo, String> {
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
