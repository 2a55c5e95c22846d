//! The benchmark apps, one room each. Adding an app: a module here and an entry in [`ALL`].

pub use crate::app::{App, AppConfig, AppPlugin};

pub mod chem;
pub mod cholesky;
pub mod docking;
pub mod failures;
pub mod fedlearn;
pub mod mapreduce;
pub mod moldesign;
pub mod montage;
pub mod physics;
pub mod synthetic;

/// Every app, in the Python suite's order.
pub static ALL: &[AppPlugin] = &[
    cholesky::PLUGIN,
    docking::PLUGIN,
    failures::PLUGIN,
    fedlearn::PLUGIN,
    mapreduce::PLUGIN,
    moldesign::PLUGIN,
    montage::PLUGIN,
    physics::PLUGIN,
    synthetic::PLUGIN,
];

/// Finds an app by name.
pub fn find(name: &str) -> Result<&'static AppPlugin, String> {
    let plugins: Vec<crate::plugins::Plugin<dyn AppConfig>> = ALL.iter().map(|a| a.plugin).collect();
    crate::plugins::find("app", &plugins, name).map(|p| ALL.iter().find(|a| a.plugin.name == p.name).expect("found"))
}
