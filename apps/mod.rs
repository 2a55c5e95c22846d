//! The benchmark apps, one room each. Adding an app: a module here and an entry in [`ALL`].

pub use crate::app::{App, AppPlugin};

pub mod cholesky;
pub mod failures;
pub mod mapreduce;
pub mod synthetic;

/// Every app, in the Python suite's order.
pub static ALL: &[AppPlugin] = &[cholesky::PLUGIN, failures::PLUGIN, mapreduce::PLUGIN, synthetic::PLUGIN];

/// The apps' plugin infos (for help and lookup).
pub fn infos() -> Vec<crate::plugins::PluginInfo> {
    ALL.iter().map(|a| a.info).collect()
}

/// Finds an app by name.
pub fn find(name: &str) -> Result<&'static AppPlugin, String> {
    crate::plugins::find("app", &infos(), name).map(|i| ALL.iter().find(|a| a.info.name == i.name).unwrap())
}
