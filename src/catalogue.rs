//! The catalogue of this build: every app, executor, filter and transformer, and the registry of
//! every task, built once at the top and handed to the layers below (the core finds tasks by
//! name in the registry installed here; it names no app).

use crate::app::AppPlugin;
use crate::data::{FilterPlugin, TransformerPlugin};
use crate::executor::ExecutorPlugin;
use crate::task::Registry;

/// Every plugin of this build, by kind.
pub(crate) struct Catalogue {
    /// The apps, in the Python suite's order.
    pub apps: &'static [AppPlugin],
    /// The executors compiled in.
    pub executors: &'static [ExecutorPlugin],
    /// The filters.
    pub filters: &'static [FilterPlugin],
    /// The transformers.
    pub transformers: &'static [TransformerPlugin],
}

/// The catalogue of this build.
pub(crate) const CATALOGUE: Catalogue = Catalogue {
    apps: crate::apps::ALL,
    executors: crate::executor::EXECUTORS,
    filters: crate::data::FILTERS,
    transformers: crate::data::TRANSFORMERS,
};

impl Catalogue {
    /// The registry of every task: the engine's own and every app's.
    pub(crate) fn registry(&self) -> Registry {
        let mut r = Registry::new();
        crate::engine::register_builtin_tasks(&mut r);
        for app in self.apps {
            (app.register_tasks)(&mut r);
        }
        r
    }
}

/// Installs the registry of [`CATALOGUE`] for the core, once per process: every entry point of
/// taps (the CLI, a worker, [`crate::run::run_in`]) calls it before any task runs.
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Only this function installs a registry, once.
        let _ = crate::task::install_registry(CATALOGUE.registry());
    });
}
