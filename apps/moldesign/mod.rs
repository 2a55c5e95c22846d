//! `moldesign`: active learning for molecules of high ionisation energy (the Python suite's
//! §5.6). A search space of SMILES; the vertical ionisation energy of a molecule computed by a
//! `compute_vertical` task (Open Babel 3-D geometry, xtb GFN2-xTB relaxation, cation single
//! point); a surrogate (k-nearest neighbours over ECFP fingerprints) trained and run as tasks
//! (`train_model`, 64 `run_model` chunks, `combine_inferences`) that picks each next batch.
//!
//! Unlike the Python suite, a molecule whose computation fails is replaced by a *different*
//! molecule not yet tried (the reference resubmits the same one), ionisation energies are in eV
//! (its figure says Ha), and by default they carry GFN2-xTB's empirical IP shift so that they
//! compare with experiment (see `empirical_shift`).

pub mod space;
pub mod xtb;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::app::{App, AppConfig, AppPlugin, require_programs};
use crate::engine::{Completions, Engine, TaskFuture};
use crate::options::Validate;
use crate::task::{Many, Registry, Shared, Task, TaskError};
use crate::{app_info, task_arg};

use crate::apps::chem;

crate::options! {
    /// Options of the `moldesign` app.
    pub(crate) struct MoldesignOptions {
        /// Search space: a whitespace-separated table with a `smiles` column (QM9-search.tsv) or a SMILES file; none = generate one (see search-space-size).
        dataset: Option<PathBuf> = None,
        /// Molecules in the generated search space (when no dataset is given).
        search_space_size: u64 = 10_000,
        /// Molecules computed before the first model is trained (at least 4).
        initial_count: u64 = 8,
        /// Stop once this many molecules have been computed.
        search_count: u64 = 64,
        /// Molecules computed per active-learning iteration.
        batch_size: u64 = 4,
        /// Seed for choosing the initial set and replacements of failed molecules.
        seed: u64 = 0,
        /// Subtract GFN2-xTB's empirical IP shift (4.8455 eV, as `xtb --vip`) from E(cation) - E(neutral); false = the raw difference of the Python suite.
        empirical_shift: bool = true,
    }
}

/// The most molecules a generated search space may hold.
const MAX_GENERATED: u64 = 100_000;

/// Inference chunks per iteration, as the Python suite.
pub const CHUNKS: usize = 64;

impl Validate for MoldesignOptions {
    fn validate(&self) -> Result<(), String> {
        if self.initial_count < 4 {
            return Err(format!(
                "app.initial_count must be at least 4 (got {}): Number of initial calculations must be at least four (the surrogate uses 4 neighbours)",
                self.initial_count
            ));
        }
        if self.batch_size == 0 {
            return Err("app.batch_size must be at least 1".into());
        }
        if self.dataset.is_none() && !(self.initial_count..=MAX_GENERATED).contains(&self.search_space_size) {
            return Err(format!(
                "app.search_space_size must be from app.initial_count ({}) to {} (got {})",
                self.initial_count, MAX_GENERATED, self.search_space_size
            ));
        }
        Ok(())
    }
}

/// The plugin entry.
pub const PLUGIN: AppPlugin = AppPlugin {
    plugin: crate::plugin!(
        dyn AppConfig,
        MoldesignOptions,
        "moldesign",
        "active learning of molecules with high ionisation energy (xtb + Open Babel)"
    ),
    register_tasks,
};

fn register_tasks(r: &mut Registry) {
    r.add::<ComputeVertical>().add::<TrainModel>().add::<RunModel>().add::<CombineInferences>();
}

impl AppConfig for MoldesignOptions {
    fn get_app(&self, run_dir: &Path) -> anyhow::Result<Box<dyn App>> {
        let space = match &self.dataset {
            Some(path) => space::read_dataset(path).map_err(anyhow::Error::msg)?,
            None => {
                let t = Instant::now();
                let space = space::generate(self.search_space_size as usize).map_err(anyhow::Error::msg)?;
                let path = run_dir.join("search-space.smi");
                std::fs::write(&path, space.join("\n") + "\n")?;
                app_info!(
                    "Generated search space of {} molecules in {:.2}s ({})",
                    space.len(),
                    t.elapsed().as_secs_f64(),
                    path.display()
                );
                space
            }
        };
        Ok(Box::new(MoldesignApp { opts: self.clone(), space, results: Vec::new() }))
    }

    /// Open Babel and xtb installed; a dataset readable, with at least `initial_count` molecules.
    fn preflight(&self) -> Result<(), String> {
        require_programs(&[("obabel", "apt-get install openbabel"), ("xtb", "apt-get install xtb")])?;
        if let Some(path) = &self.dataset {
            let n = space::read_dataset(path)?.len() as u64;
            if n < self.initial_count {
                return Err(format!(
                    "app.dataset {} holds {} distinct molecules, fewer than app.initial_count ({})",
                    path.display(),
                    n,
                    self.initial_count
                ));
            }
        }
        Ok(())
    }
}

/// `compute_vertical(smiles)`: E(cation) − E(neutral) in eV at the GFN2-xTB geometry of the
/// neutral, without empirical shift (see [`xtb::vertical_ionisation`]), in the task's own
/// directory `RUN_DIR/tasks/TASK-ID/`.
pub struct ComputeVertical;
impl Task for ComputeVertical {
    const NAME: &'static str = "compute_vertical";
    type Args = (String,);
    type Output = f64;
    fn run((smiles,): Self::Args) -> Result<f64, TaskError> {
        let context = crate::task::context()
            .ok_or_else(|| TaskError::exception("RuntimeError", "compute_vertical runs only as a task"))?;
        xtb::vertical_ionisation(&smiles, &context.work_dir(None)?)
    }
}

/// The surrogate: k-nearest neighbours over fingerprints, fitted on (SMILES, ionisation energy).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Surrogate {
    knn: chem::Knn,
}
task_arg!(Surrogate);

/// `train_model(rows)`: fingerprints of the training SMILES, then the k-NN fitted to their
/// energies (molecules Open Babel cannot fingerprint are left out).
pub struct TrainModel;
impl Task for TrainModel {
    const NAME: &'static str = "train_model";
    type Args = (Vec<(String, f64)>,);
    type Output = Surrogate;
    fn run((rows,): Self::Args) -> Result<Surrogate, TaskError> {
        let smiles: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let (fps, ys): (Vec<_>, Vec<_>) = chem::fingerprints(&smiles)
            .map_err(obabel_failed)?
            .into_iter()
            .zip(rows.iter().map(|r| r.1))
            .filter_map(|(f, y)| Some((f?, y)))
            .unzip();
        if fps.is_empty() {
            return Err(TaskError::exception("ValueError", "no training molecule could be fingerprinted"));
        }
        Ok(Surrogate { knn: chem::Knn::fit(fps, ys) })
    }
}

/// `run_model(model, smiles)`: (SMILES, predicted energy) for a chunk of the search space; NaN
/// where the molecule cannot be fingerprinted.
pub struct RunModel;
impl Task for RunModel {
    const NAME: &'static str = "run_model";
    type Args = (Shared<Surrogate>, Vec<String>);
    type Output = Vec<(String, f64)>;
    fn run((model, smiles): Self::Args) -> Result<Vec<(String, f64)>, TaskError> {
        let fps = chem::fingerprints(&smiles).map_err(obabel_failed)?;
        let known: Vec<chem::Fingerprint> = fps.iter().flatten().cloned().collect();
        let mut predicted = model.knn.predict(&known).into_iter();
        Ok(smiles
            .into_iter()
            .zip(fps)
            .map(|(s, f)| (s, f.and_then(|_| predicted.next()).unwrap_or(f64::NAN)))
            .collect())
    }
}

/// Open Babel failed as a whole (not one molecule): a program failure.
fn obabel_failed(e: chem::ChemError) -> TaskError {
    TaskError::new(crate::task::ErrorKind::ProgramFailed, e.to_string())
}

/// `combine_inferences(*chunks)`: the chunks' predictions, concatenated in order.
pub struct CombineInferences;
impl Task for CombineInferences {
    const NAME: &'static str = "combine_inferences";
    type Args = (Many<Vec<(String, f64)>>,);
    type Output = Vec<(String, f64)>;
    fn run((chunks,): Self::Args) -> Result<Vec<(String, f64)>, TaskError> {
        Ok(chunks.0.into_iter().flatten().collect())
    }
}

/// One computed molecule: a row of `results.csv`.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    smiles: String,
    /// Ionisation energy in eV.
    ie: f64,
    /// 0 for the initial set, then the iteration.
    batch: u64,
    /// Seconds since the start of the workflow.
    time: f64,
}

/// `numpy.array_split(items, n)`: `n` contiguous chunks whose sizes differ by at most one, the
/// longer ones first (some empty when there are fewer items than chunks).
pub fn array_split<T: Clone>(items: &[T], n: usize) -> Vec<Vec<T>> {
    let (q, r) = (items.len() / n, items.len() % n);
    let mut out = Vec::with_capacity(n);
    let mut at = 0;
    for i in 0..n {
        let len = q + usize::from(i < r);
        out.push(items[at..at + len].to_vec());
        at += len;
    }
    out
}

/// The app: the search space, and the molecules computed so far.
pub struct MoldesignApp {
    opts: MoldesignOptions,
    space: Vec<String>,
    results: Vec<Row>,
}

/// After this many failures with no success at all, the computations are taken to be broken.
const FAILURES_BEFORE_SUCCESS: usize = 16;

/// Whether a task's error means the run is ending (interrupted, engine shut down), not that
/// the molecule failed: then no replacement is drawn.
fn stops_the_run(e: &TaskError) -> bool {
    use crate::task::ErrorKind;
    matches!(e.kind, ErrorKind::Interrupted | ErrorKind::EngineShutdown | ErrorKind::Cancelled)
}

/// Which molecules have been submitted, and the seeded order in which untried ones are drawn.
struct Picker {
    order: Vec<usize>,
    next: usize,
    tried: Vec<bool>,
}

impl Picker {
    fn new(len: usize, seed: u64) -> Self {
        let mut order: Vec<usize> = (0..len).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        Picker { order, next: 0, tried: vec![false; len] }
    }

    /// The next molecule of the seeded order not tried yet (marked tried).
    fn draw(&mut self) -> Option<usize> {
        while self.next < self.order.len() {
            let i = self.order[self.next];
            self.next += 1;
            if self.take(i) {
                return Some(i);
            }
        }
        None
    }

    /// Marks `i` tried; false if it already was.
    fn take(&mut self, i: usize) -> bool {
        !std::mem::replace(&mut self.tried[i], true)
    }
}

impl MoldesignApp {
    fn ie(&self, delta: f64) -> f64 {
        if self.opts.empirical_shift { delta - xtb::GFN2_IP_SHIFT_EV } else { delta }
    }

    /// The initial set: `initial_count` molecules drawn with the seed; each failure replaced by
    /// the next untried molecule. Returns how many failed.
    fn initial_set(&mut self, engine: &Engine, picker: &mut Picker, start: Instant) -> anyhow::Result<usize> {
        let mut pending = Completions::new();
        let mut smiles_of: HashMap<uuid::Uuid, usize> = HashMap::new();
        let submit = |i: usize, pending: &mut Completions<f64>, smiles_of: &mut HashMap<uuid::Uuid, usize>| {
            let f: TaskFuture<f64> = engine.submit::<ComputeVertical>((self.space[i].clone().into(),));
            smiles_of.insert(f.task_id(), i);
            pending.push(f);
        };
        let mut initial = Vec::new();
        for _ in 0..self.opts.initial_count {
            let i = picker.draw().expect("preflight: the space holds initial_count molecules");
            submit(i, &mut pending, &mut smiles_of);
            initial.push(self.space[i].as_str());
        }
        app_info!("Submitted initial computations");
        tracing::info!("Initial set: {:?}", initial);
        let mut failed = 0;
        while let Some(f) = pending.next() {
            let i = smiles_of[&f.task_id()];
            match f.result() {
                Ok(delta) => self.results.push(Row {
                    smiles: self.space[i].clone(),
                    ie: self.ie(delta),
                    batch: 0,
                    time: start.elapsed().as_secs_f64(),
                }),
                Err(e) if stops_the_run(&e) => anyhow::bail!("compute_vertical: {}", e),
                Err(e) => {
                    failed += 1;
                    if self.results.is_empty() && failed >= FAILURES_BEFORE_SUCCESS {
                        anyhow::bail!(
                            "the first {} compute_vertical tasks all failed, the last with: {}",
                            failed,
                            e.message.lines().next().unwrap_or("")
                        );
                    }
                    match picker.draw() {
                        Some(j) => {
                            tracing::warn!(
                                "Simulation task failed for {}... submitting new SMILE string {}: {}",
                                self.space[i],
                                self.space[j],
                                e
                            );
                            submit(j, &mut pending, &mut smiles_of);
                        }
                        None => tracing::warn!(
                            "Simulation task failed for {} and the search space is exhausted: {}",
                            self.space[i],
                            e
                        ),
                    }
                }
            }
        }
        Ok(failed)
    }
}

impl App for MoldesignApp {
    fn run(&mut self, engine: &Engine, _run_dir: &Path) -> anyhow::Result<()> {
        let start = Instant::now();
        app_info!("Loaded search space (size={})", crate::apps::mapreduce::commas(self.space.len() as u64));
        let mut picker = Picker::new(self.space.len(), self.opts.seed);
        let mut failed = self.initial_set(engine, &mut picker, start)?;
        app_info!("Done computing initial set");
        app_info!("Created initial training set (size={})", self.results.len());
        anyhow::ensure!(!self.results.is_empty(), "no molecule of the initial set could be computed");
        let index: HashMap<&str, usize> = self.space.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
        let chunks = array_split(&self.space, CHUNKS);
        let mut batch = 1;
        while (self.results.len() as u64) < self.opts.search_count {
            let rows: Vec<(String, f64)> = self.results.iter().map(|r| (r.smiles.clone(), r.ie)).collect();
            let model = engine.submit::<TrainModel>((rows.into(),));
            app_info!("Submitting inference tasks");
            let parts: Vec<TaskFuture<Vec<(String, f64)>>> =
                chunks.iter().map(|c| engine.submit::<RunModel>(((&model).into(), c.clone().into()))).collect();
            let combined = engine.submit::<CombineInferences>((parts.iter().map(Into::into).collect(),));
            let mut predictions = combined.result().map_err(|e| anyhow::anyhow!("inference failed: {}", e))?;
            app_info!("Inference results received (size={})", predictions.len());
            // Best first; molecules without a prediction last.
            predictions.sort_by(|a, b| b.1.total_cmp(&a.1));
            predictions.sort_by_key(|p| p.1.is_nan());
            let mut futures = Vec::new();
            for (smiles, _) in &predictions {
                if futures.len() as u64 == self.opts.batch_size {
                    break;
                }
                let Some(&i) = index.get(smiles.as_str()) else { continue };
                if picker.take(i) {
                    futures.push((i, engine.submit::<ComputeVertical>((smiles.clone().into(),))));
                }
            }
            if futures.is_empty() {
                app_info!("Every molecule of the search space has been tried");
                break;
            }
            app_info!("Submitted new computations (size={})", futures.len());
            for (i, f) in futures {
                match f.result() {
                    Ok(delta) => self.results.push(Row {
                        smiles: self.space[i].clone(),
                        ie: self.ie(delta),
                        batch,
                        time: start.elapsed().as_secs_f64(),
                    }),
                    Err(e) if stops_the_run(&e) => anyhow::bail!("compute_vertical: {}", e),
                    Err(e) => {
                        failed += 1;
                        tracing::warn!("Simulation task failed for {}: {}", self.space[i], e);
                    }
                }
            }
            batch += 1;
        }
        let best = self.results.iter().map(|r| r.ie).fold(f64::NEG_INFINITY, f64::max);
        app_info!(
            "Computed {} molecules in {} iterations ({} failed); best ionisation energy {:.3} eV",
            self.results.len(),
            batch - 1,
            failed,
            best
        );
        Ok(())
    }

    /// `results.csv` (smiles, ie, batch, time) and `results.png` (every ionisation energy
    /// against time, with the running best).
    fn save(&mut self, run_dir: &Path) -> anyhow::Result<()> {
        let csv = run_dir.join("results.csv");
        let mut text = String::from("smiles,ie,batch,time\n");
        for r in &self.results {
            text.push_str(&format!("{},{},{},{}\n", r.smiles, r.ie, r.batch, r.time));
        }
        std::fs::write(&csv, text)?;
        app_info!("Saved results to {}", csv.display());
        let png = run_dir.join("results.png");
        let points: Vec<(f64, f64)> = self.results.iter().map(|r| (r.time, r.ie)).collect();
        let y_label = if self.opts.empirical_shift { "Ion. Energy (eV)" } else { "E(cation) - E(neutral) (eV)" };
        crate::plot::best_against_time(
            &png,
            "moldesign",
            "Walltime (s)",
            y_label,
            &points,
            crate::plot::Better::Higher,
        )?;
        app_info!("Saved figure to {}", png.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_split_matches_numpy() {
        let v: Vec<u32> = (0..10).collect();
        let sizes: Vec<usize> = array_split(&v, 4).iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 3, 2, 2]);
        assert_eq!(array_split(&v, 4).concat(), v);
        let small = array_split(&v[..3], CHUNKS);
        assert_eq!(small.len(), CHUNKS);
        assert_eq!(small.iter().filter(|c| !c.is_empty()).count(), 3);
    }

    #[test]
    fn the_picker_never_gives_a_molecule_twice() {
        let mut p = Picker::new(50, 7);
        assert!(p.take(p.order[3]));
        let drawn: Vec<usize> = std::iter::from_fn(|| p.draw()).collect();
        assert_eq!(drawn.len(), 49, "every molecule once, the one taken before excepted");
        let mut sorted = drawn.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 49);
        assert_eq!(Picker::new(50, 7).order, Picker::new(50, 7).order);
        assert_ne!(Picker::new(50, 7).order, Picker::new(50, 8).order);
    }
}
