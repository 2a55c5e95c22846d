//! `docking`: protein-ligand docking with AutoDock Vina, steered by active learning (the Python
//! suite's ParslDock-based app, reference §5.2).
//!
//! A random sample of the ligands is docked first; then, each iteration, a surrogate (Morgan
//! fingerprints and a 4-nearest-neighbour regressor, [`crate::apps::chem`]) trained in the
//! driver on the scores so far ranks the molecules not yet docked, and the best-ranked batch is
//! docked next. Docking one molecule is a chain of five tasks in its own directory
//! `RUN_DIR/tasks/NNNN_TITLE/` (see [`tasks`]). A molecule whose chain fails is skipped (not
//! retried, not trained on) and counted.

pub mod tasks;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{SeedableRng, rngs::StdRng};

use crate::app::{App, AppConfig, AppPlugin, require_programs};
use crate::app_info;
use crate::apps::chem;
use crate::engine::{Engine, TaskFuture, as_completed};
use crate::options::Validate;
use crate::task::Registry;

pub use tasks::{AutodockVina, MakeAutodockConfig, PdbToPdbqt, SetElement, SmiToPdb, VinaSettings};

/// The receptor used when none is given: Debian's autodock-vina test data (an Abl kinase domain,
/// whose ligand there is imatinib).
pub const DEFAULT_RECEPTOR: &str = "/usr/share/doc/autodock-vina/test-data/protein.pdbqt.gz";
/// The search box of [`DEFAULT_RECEPTOR`], from `test-data/conf.txt`: centre, then edges (Å).
pub const DEFAULT_BOX: ([f64; 3], [f64; 3]) = ([11.0, 90.5, 57.5], [22.0, 24.0, 28.0]);
/// The ligands used when none are given: 48 small drug molecules (apps/docking/ligands.csv).
pub const DEFAULT_LIGANDS: &str = include_str!("ligands.csv");

/// The surrogate's neighbours; the initial sample must be at least this large.
const NEIGHBOURS: u64 = chem::NEIGHBOURS as u64;

crate::options! {
    /// Options of the `docking` app.
    pub struct DockingOptions {
        /// CSV of ligands with TITLE and SMILES columns (none = 48 small drug molecules shipped in apps/docking/ligands.csv).
        smi_file_name_ligand: Option<PathBuf> = None,
        /// Receptor PDBQT, plain or gzipped (none = Debian's autodock-vina test-data/protein.pdbqt.gz); a receptor needs the box (center_*, size_*).
        receptor: Option<PathBuf> = None,
        /// The reference's VMD script: accepted and ignored (set_element runs in taps, no VMD).
        tcl_path: Option<PathBuf> = None,
        /// Molecules docked, chosen at random, before the first model is trained (at least 4).
        initial_simulations: u64 = 8,
        /// Rounds of training the model and docking its best-ranked batch.
        num_iterations: u64 = 3,
        /// Molecules docked per round.
        batch_size: u64 = 8,
        /// Seed of the initial sample and of vina's search.
        seed: u64 = 0,
        /// Vina's search effort (its exhaustiveness).
        exhaustiveness: u64 = 20,
        /// Poses vina writes per molecule at most.
        num_modes: u64 = 20,
        /// Poses worse than the best by more than this (kcal/mol) are dropped by vina.
        energy_range: f64 = 10.0,
        /// Search box centre, x (Å; none = the default receptor's box).
        center_x: Option<f64> = None,
        /// Search box centre, y (Å).
        center_y: Option<f64> = None,
        /// Search box centre, z (Å).
        center_z: Option<f64> = None,
        /// Search box edge along x (Å; none = the default receptor's box).
        size_x: Option<f64> = None,
        /// Search box edge along y (Å).
        size_y: Option<f64> = None,
        /// Search box edge along z (Å).
        size_z: Option<f64> = None,
        /// CPUs each vina run uses (its --cpu).
        cpu_per_task: u64 = 1,
        /// Keep every molecule's working directory under tasks/ (by default those of docked molecules are removed at the end).
        keep_files: bool = false,
    }
}

/// The three values of `names`, if all are set; an error if only some are.
fn triple(values: [Option<f64>; 3], names: [&str; 3]) -> Result<Option<[f64; 3]>, String> {
    match values {
        [Some(x), Some(y), Some(z)] => Ok(Some([x, y, z])),
        [None, None, None] => Ok(None),
        _ => Err(format!("set all of app.{}, app.{} and app.{}, or none of them", names[0], names[1], names[2])),
    }
}

impl DockingOptions {
    /// The search box: the options', or the default receptor's; an error if a receptor is given
    /// without a box (the default box belongs to the default receptor).
    fn search_box(&self) -> Result<([f64; 3], [f64; 3]), String> {
        let center = triple([self.center_x, self.center_y, self.center_z], ["center_x", "center_y", "center_z"])?;
        let size = triple([self.size_x, self.size_y, self.size_z], ["size_x", "size_y", "size_z"])?;
        match (center, size) {
            (Some(c), Some(s)) => Ok((c, s)),
            (None, None) if self.receptor.is_none() => Ok(DEFAULT_BOX),
            _ if self.receptor.is_some() => Err(format!(
                "app.receptor {} needs its search box: set app.center_x/y/z and app.size_x/y/z (Å) \
                 (the default box fits only the default receptor)",
                self.receptor.as_deref().unwrap_or(Path::new("")).display()
            )),
            _ => Err("set both the box centre (app.center_x/y/z) and its size (app.size_x/y/z), or neither".into()),
        }
    }
}

impl Validate for DockingOptions {
    fn validate(&self) -> Result<(), String> {
        if self.initial_simulations < NEIGHBOURS {
            return Err(format!(
                "Number of initial simulations must be at least four. (app.initial_simulations = {}; the model averages 4 neighbours)",
                self.initial_simulations
            ));
        }
        for (name, value) in [
            ("batch_size", self.batch_size),
            ("exhaustiveness", self.exhaustiveness),
            ("num_modes", self.num_modes),
            ("cpu_per_task", self.cpu_per_task),
        ] {
            if value == 0 {
                return Err(format!("app.{} must be at least 1", name));
            }
        }
        if !(self.energy_range.is_finite() && self.energy_range > 0.0) {
            return Err(format!("app.energy_range must be a positive number of kcal/mol, got {}", self.energy_range));
        }
        let (center, size) = self.search_box()?;
        if let Some(c) = center.iter().find(|c| !c.is_finite()) {
            return Err(format!("app.center_x/y/z must be finite numbers, got {}", c));
        }
        if let Some(s) = size.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("app.size_x/y/z must be positive numbers of Å, got {}", s));
        }
        Ok(())
    }
}

/// One ligand of the input CSV.
#[derive(Clone, Debug, PartialEq)]
pub struct Ligand {
    /// Its TITLE.
    pub title: String,
    /// Its SMILES.
    pub smiles: String,
}

/// Reads a ligand CSV with `TITLE` and `SMILES` columns (others are ignored), as the reference's
/// `pd.read_csv(...)[["TITLE", "SMILES"]]`; `what` names the source in errors. A SMILES that
/// repeats an earlier row's is dropped with a warning (the reference docks it twice, and its
/// surrogate then trains on the same molecule twice); the first row is kept. Returns the ligands
/// and a description of each dropped row.
pub fn read_ligands(csv_text: impl Read, what: &str) -> Result<(Vec<Ligand>, Vec<String>), String> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(csv_text);
    let headers = reader.headers().map_err(|e| format!("{}: {}", what, e))?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            format!(
                "{} has no {} column (a CSV with TITLE and SMILES columns is expected; it has: {})",
                what,
                name,
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })
    };
    let (title, smiles) = (column("TITLE")?, column("SMILES")?);
    let mut ligands: Vec<Ligand> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    let mut dropped = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.map_err(|e| format!("{}: {}", what, e))?;
        let smiles = row.get(smiles).unwrap_or("").to_string();
        if smiles.is_empty() {
            return Err(format!("{}: row {} has an empty SMILES", what, i + 2));
        }
        let title = row.get(title).unwrap_or("").to_string();
        if let Some(&first) = seen.get(&smiles) {
            let first: &Ligand = &ligands[first];
            dropped.push(format!("{} (row {}, same SMILES as {})", title, i + 2, first.title));
            continue;
        }
        seen.insert(smiles.clone(), ligands.len());
        ligands.push(Ligand { title, smiles });
    }
    if ligands.is_empty() {
        return Err(format!("{} holds no ligands", what));
    }
    if !dropped.is_empty() {
        dropped.insert(
            0,
            format!("{}: {} ligand(s) repeat an earlier SMILES and are not docked again", what, dropped.len()),
        );
    }
    Ok((ligands, dropped))
}

impl DockingOptions {
    /// The ligands: the CSV's, or the shipped set; and what was dropped as a repeat.
    fn ligands(&self) -> Result<(Vec<Ligand>, Vec<String>), String> {
        match &self.smi_file_name_ligand {
            None => read_ligands(DEFAULT_LIGANDS.as_bytes(), "the shipped apps/docking/ligands.csv"),
            Some(p) => {
                let what = format!("app.smi_file_name_ligand {}", p.display());
                let f = std::fs::File::open(p).map_err(|e| format!("{}: {}", what, e))?;
                read_ligands(f, &what)
            }
        }
    }

    /// The receptor file as given (or [`DEFAULT_RECEPTOR`]), checked to exist.
    fn receptor_source(&self) -> Result<PathBuf, String> {
        self.receptor_or(Path::new(DEFAULT_RECEPTOR))
    }

    /// The receptor file as given, or `default`, checked to exist.
    fn receptor_or(&self, default: &Path) -> Result<PathBuf, String> {
        match &self.receptor {
            Some(p) if p.is_file() => Ok(p.clone()),
            Some(p) => {
                Err(format!("app.receptor {} is not a readable file (a receptor .pdbqt or .pdbqt.gz)", p.display()))
            }
            None if default.is_file() => Ok(default.into()),
            None => Err(format!(
                "the default receptor {} is missing (apt-get install autodock-vina ships it; minimal images may strip \
                 /usr/share/doc): give one with --app.receptor FILE.pdbqt and its box (--app.center-x ... --app.size-z)",
                default.display()
            )),
        }
    }
}

fn preflight(o: &DockingOptions) -> Result<(), String> {
    require_programs(&[("obabel", "apt-get install openbabel"), ("vina", "apt-get install autodock-vina")])?;
    o.receptor_source()?;
    let (ligands, _) = o.ligands()?;
    if o.initial_simulations > ligands.len() as u64 {
        return Err(format!(
            "app.initial_simulations ({}) is more than the {} ligands in {}",
            o.initial_simulations,
            ligands.len(),
            o.smi_file_name_ligand.as_deref().map_or("the shipped set".into(), |p| p.display().to_string())
        ));
    }
    Ok(())
}

impl AppConfig for DockingOptions {
    fn get_app(&self, run_dir: &Path) -> anyhow::Result<Box<dyn App>> {
        if let Some(tcl) = &self.tcl_path {
            tracing::warn!(
                "app.tcl_path {} is ignored: set_element writes the element columns in taps (there is no VMD step)",
                tcl.display()
            );
        }
        let (ligands, repeated) = self.ligands().map_err(anyhow::Error::msg)?;
        if let Some((head, rows)) = repeated.split_first() {
            tracing::warn!("{}: {}", head, rows.join(", "));
        }
        let receptor = prepare_receptor(&self.receptor_source().map_err(anyhow::Error::msg)?, run_dir)?;
        let (center, size) = self.search_box().map_err(anyhow::Error::msg)?;
        let settings = VinaSettings {
            center,
            size,
            exhaustiveness: self.exhaustiveness,
            num_modes: self.num_modes,
            energy_range: self.energy_range,
        };
        Ok(Box::new(DockingApp::new(self.clone(), ligands, receptor, settings)))
    }

    fn preflight(&self) -> Result<(), String> {
        preflight(self)
    }
}

/// The receptor the tasks read, as an absolute path: a gzipped one decompressed into
/// `RUN_DIR/receptor.pdbqt` (never beside the original), a plain one where it is.
fn prepare_receptor(source: &Path, run_dir: &Path) -> anyhow::Result<PathBuf> {
    let gzipped = source.extension().is_some_and(|e| e == "gz");
    if !gzipped {
        return Ok(std::path::absolute(source)?);
    }
    let target = std::path::absolute(run_dir.join("receptor.pdbqt"))?;
    let read = || -> std::io::Result<()> {
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(source)?).read_to_end(&mut text)?;
        std::fs::write(&target, text)
    };
    read().map_err(|e| {
        anyhow::anyhow!("cannot decompress the receptor {} into {}: {}", source.display(), target.display(), e)
    })?;
    app_info!("Receptor {} decompressed into {}", source.display(), target.display());
    Ok(target)
}

fn register_tasks(r: &mut Registry) {
    r.add::<SmiToPdb>().add::<SetElement>().add::<PdbToPdbqt>().add::<MakeAutodockConfig>().add::<AutodockVina>();
}

/// The plugin entry.
pub const PLUGIN: AppPlugin = AppPlugin {
    plugin: crate::plugin!(
        dyn AppConfig,
        DockingOptions,
        "docking",
        "protein-ligand docking with AutoDock Vina, steered by active learning"
    ),
    register_tasks,
};

/// The initial sample: `k` distinct molecule indices out of `n`, chosen by `seed`.
pub fn initial_sample(n: usize, k: usize, seed: u64) -> Vec<usize> {
    rand::seq::index::sample(&mut StdRng::seed_from_u64(seed), n, k.min(n)).into_vec()
}

/// The next batch, as the reference chooses it: a surrogate trained on `scored` (molecule index,
/// score) predicts a score for every molecule not `attempted`, and the `batch` lowest
/// predictions (best binders) come first. Molecules without a fingerprint (Open Babel could not
/// read them) come last, in input order.
pub fn choose_batch(
    fingerprints: &[Option<chem::Fingerprint>],
    scored: &[(usize, f64)],
    attempted: &[bool],
    batch: usize,
) -> Vec<usize> {
    let train: Vec<(chem::Fingerprint, f64)> =
        scored.iter().filter_map(|&(i, s)| fingerprints[i].map(|f| (f, s))).collect();
    let (xs, ys): (Vec<chem::Fingerprint>, Vec<f64>) = train.into_iter().unzip();
    let model = chem::Knn::fit(xs, ys);
    app_info!("Model training finished");
    let candidates: Vec<usize> = (0..attempted.len()).filter(|&i| !attempted[i] && fingerprints[i].is_some()).collect();
    let query: Vec<chem::Fingerprint> = candidates.iter().map(|&i| fingerprints[i].expect("filtered")).collect();
    let predicted = model.predict(&query);
    app_info!("Model inference finished");
    let mut ranked: Vec<(f64, usize)> = predicted.into_iter().zip(candidates).collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let unreadable = (0..attempted.len()).filter(|&i| !attempted[i] && fingerprints[i].is_none());
    ranked.into_iter().map(|(_, i)| i).chain(unreadable).take(batch).collect()
}

/// A molecule's result.
#[derive(Clone, Debug)]
struct Docked {
    /// Its index in the ligand list.
    index: usize,
    /// Best vina affinity (kcal/mol).
    score: f64,
    /// 0 for the initial sample, then the iteration that chose it.
    iteration: u64,
    /// Seconds from the start of the app's run to its result.
    time: f64,
}

/// The app: the ligands, the prepared receptor, and the results so far.
pub struct DockingApp {
    opts: DockingOptions,
    ligands: Vec<Ligand>,
    receptor: PathBuf,
    settings: VinaSettings,
    /// Whether molecule `i` was submitted (docked or failed).
    attempted: Vec<bool>,
    docked: Vec<Docked>,
    /// Working directory name of each submitted molecule.
    dirs: HashMap<usize, String>,
    failed: usize,
}

impl DockingApp {
    fn new(opts: DockingOptions, ligands: Vec<Ligand>, receptor: PathBuf, settings: VinaSettings) -> Self {
        let n = ligands.len();
        DockingApp {
            opts,
            ligands,
            receptor,
            settings,
            attempted: vec![false; n],
            docked: Vec::new(),
            dirs: HashMap::new(),
            failed: 0,
        }
    }

    /// The working directory name of molecule `i`: its index and a file-name-safe part of its title.
    fn dir_name(&self, i: usize) -> String {
        let width = self.ligands.len().saturating_sub(1).to_string().len().max(4);
        let title: String = self.ligands[i]
            .title
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
            .take(40)
            .collect();
        if title.is_empty() { format!("{:0w$}", i, w = width) } else { format!("{:0w$}_{}", i, title, w = width) }
    }

    /// Submits the five-task chain of molecule `i`; returns the future of its score.
    fn submit(&mut self, engine: &Engine, i: usize) -> TaskFuture<f64> {
        self.attempted[i] = true;
        let dir = self.dir_name(i);
        self.dirs.insert(i, dir.clone());
        let smiles = self.ligands[i].smiles.clone();
        let pdb = engine.submit::<SmiToPdb>((smiles.clone().into(), dir.into()));
        let coords = engine.submit::<SetElement>(((&pdb).into(),));
        let pdbqt = engine.submit::<PdbToPdbqt>(((&coords).into(),));
        let config = engine.submit::<MakeAutodockConfig>((
            self.receptor.clone().into(),
            (&pdbqt).into(),
            self.settings.clone().into(),
        ));
        let score = engine.submit::<AutodockVina>((
            (&config).into(),
            smiles.clone().into(),
            self.opts.cpu_per_task.into(),
            self.opts.seed.into(),
        ));
        app_info!("Submitted computations for {}", smiles);
        score
    }

    /// Waits for the molecules `batch` (index, score future) as they finish, recording each
    /// score; a failed molecule is logged and skipped.
    fn collect(&mut self, batch: Vec<(usize, TaskFuture<f64>)>, iteration: u64, start: Instant) {
        let by_id: HashMap<uuid::Uuid, usize> = batch.iter().map(|(i, f)| (f.task_id(), *i)).collect();
        let futures: Vec<TaskFuture<f64>> = batch.into_iter().map(|(_, f)| f).collect();
        let total = futures.len();
        let mut failed = 0;
        for f in as_completed(futures, None).flatten() {
            let i = by_id[&f.task_id()];
            let smiles = &self.ligands[i].smiles;
            match f.result() {
                Ok(score) => {
                    app_info!("Computation for {} succeeded with score = {}", smiles, score);
                    let time = start.elapsed().as_secs_f64();
                    self.docked.push(Docked { index: i, score, iteration, time });
                }
                Err(e) => {
                    failed += 1;
                    tracing::warn!("Computation for {} failed: {}", smiles, e.cause().unwrap_or(&e));
                }
            }
        }
        if failed > 0 {
            app_info!("{} of {} computations failed (skipped; tasks.jsonl says why)", failed, total);
        }
        self.failed += failed;
    }
}

impl App for DockingApp {
    fn run(&mut self, engine: &Engine, run_dir: &Path) -> anyhow::Result<()> {
        let start = Instant::now();
        let initial = initial_sample(self.ligands.len(), self.opts.initial_simulations as usize, self.opts.seed);
        app_info!("Submitting {} initial simulations", initial.len());
        let batch: Vec<(usize, TaskFuture<f64>)> = initial.into_iter().map(|i| (i, self.submit(engine, i))).collect();
        // The fingerprints do not change: computed once, while the initial sample docks.
        let fingerprints = if self.opts.num_iterations > 0 {
            let smiles: Vec<String> = self.ligands.iter().map(|l| l.smiles.clone()).collect();
            chem::fingerprints(&smiles)?
        } else {
            Vec::new()
        };
        self.collect(batch, 0, start);
        for iteration in 1..=self.opts.num_iterations {
            app_info!("Starting iteration {}/{}", iteration, self.opts.num_iterations);
            let usable = self.docked.iter().filter(|d| fingerprints[d.index].is_some()).count();
            if usable < NEIGHBOURS as usize {
                self.write_results(run_dir)?;
                anyhow::bail!(
                    "only {} molecules have a score to train on ({} failed so far); the model needs at least {} \
                     (the failed records in tasks.jsonl say why)",
                    usable,
                    self.failed,
                    NEIGHBOURS
                );
            }
            let scored: Vec<(usize, f64)> = self.docked.iter().map(|d| (d.index, d.score)).collect();
            let chosen = choose_batch(&fingerprints, &scored, &self.attempted, self.opts.batch_size as usize);
            if chosen.is_empty() {
                app_info!("Every molecule has been simulated; stopping");
                break;
            }
            let batch: Vec<(usize, TaskFuture<f64>)> =
                chosen.into_iter().map(|i| (i, self.submit(engine, i))).collect();
            self.collect(batch, iteration, start);
        }
        let best = self.docked.iter().min_by(|a, b| a.score.total_cmp(&b.score));
        if let Some(b) = best {
            app_info!(
                "Docked {} molecules ({} failed); best score {} kcal/mol for {} ({})",
                self.docked.len(),
                self.failed,
                b.score,
                self.ligands[b.index].title,
                self.ligands[b.index].smiles
            );
        }
        anyhow::ensure!(!self.docked.is_empty(), "no molecule docked ({} failed; tasks.jsonl says why)", self.failed);
        Ok(())
    }

    fn save(&mut self, run_dir: &Path) -> anyhow::Result<()> {
        self.write_results(run_dir)?;
        if !self.opts.keep_files {
            self.remove_docked_dirs(run_dir);
        }
        Ok(())
    }
}

impl DockingApp {
    /// Writes results.csv, training-results.json and best-score.png (the best score against time).
    fn write_results(&self, run_dir: &Path) -> anyhow::Result<()> {
        let csv_path = run_dir.join("results.csv");
        let write_csv = || -> anyhow::Result<()> {
            let mut w = csv::Writer::from_path(&csv_path)?;
            w.write_record(["title", "smiles", "score", "iteration", "time"])?;
            for d in &self.docked {
                let l = &self.ligands[d.index];
                w.write_record([
                    &l.title,
                    &l.smiles,
                    &d.score.to_string(),
                    &d.iteration.to_string(),
                    &format!("{:.3}", d.time),
                ])?;
            }
            w.flush()?;
            Ok(())
        };
        write_csv().map_err(|e| anyhow::anyhow!("cannot write {}: {}", csv_path.display(), e))?;
        app_info!("Results of {} molecules saved to {}", self.docked.len(), csv_path.display());

        // The reference's training frame as pandas' to_json writes it (column orientation).
        let column = |f: &dyn Fn(&Docked) -> serde_json::Value| -> serde_json::Value {
            self.docked.iter().enumerate().map(|(i, d)| (i.to_string(), f(d))).collect::<serde_json::Map<_, _>>().into()
        };
        let json = serde_json::json!({
            "smiles": column(&|d| self.ligands[d.index].smiles.clone().into()),
            "score": column(&|d| d.score.into()),
            "time": column(&|d| d.time.into()),
        });
        let json_path = run_dir.join("training-results.json");
        std::fs::write(&json_path, serde_json::to_string(&json)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {}", json_path.display(), e))?;
        app_info!("Training data saved to {}", json_path.display());

        let png = run_dir.join("best-score.png");
        let points: Vec<(f64, f64)> = self.docked.iter().map(|d| (d.time, d.score)).collect();
        let title = format!("docking: best of {} molecules", self.docked.len());
        crate::plot::best_against_time(
            &png,
            &title,
            "time (s)",
            "vina score (kcal/mol)",
            &points,
            crate::plot::Better::Lower,
        )?;
        app_info!("Plot of the best score against time saved to {}", png.display());
        Ok(())
    }

    /// Removes the working directories of the docked molecules, and `tasks/` if that empties it;
    /// those of failed molecules stay for inspection.
    fn remove_docked_dirs(&self, run_dir: &Path) {
        let tasks = run_dir.join("tasks");
        let docked: HashSet<usize> = self.docked.iter().map(|d| d.index).collect();
        for (i, dir) in &self.dirs {
            if docked.contains(i) {
                let _ = std::fs::remove_dir_all(tasks.join(dir));
            }
        }
        let _ = std::fs::remove_dir(&tasks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;

    fn options(toml: &str) -> Result<DockingOptions, String> {
        DockingOptions::from_table(&toml::from_str(toml).unwrap(), "app")
    }

    #[test]
    fn a_missing_default_receptor_names_the_option_and_the_path() {
        let o = options("").unwrap();
        let err = o.receptor_or(Path::new("/nonexistent/test-data/protein.pdbqt.gz")).unwrap_err();
        assert!(err.starts_with("the default receptor /nonexistent/test-data/protein.pdbqt.gz is missing"), "{}", err);
        assert!(err.contains("--app.receptor"), "{}", err);
        assert!(!err.contains('\n'));
    }

    #[test]
    fn the_box_is_the_default_receptors_or_given_in_full() {
        assert_eq!(options("").unwrap().search_box(), Ok(DEFAULT_BOX));
        let given = "center_x = 1\ncenter_y = 2\ncenter_z = 3\nsize_x = 4\nsize_y = 5\nsize_z = 6\n";
        assert_eq!(options(given).unwrap().search_box(), Ok(([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])));
        let own = format!("receptor = \"r.pdbqt\"\n{}", given);
        assert_eq!(options(&own).unwrap().search_box(), Ok(([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])));
        assert!(options("receptor = \"r.pdbqt\"").unwrap_err().contains("needs its search box"));
    }

    #[test]
    fn the_shipped_ligands_are_read_and_csv_quoting_works() {
        let (shipped, repeated) = options("").unwrap().ligands().unwrap();
        assert!(repeated.is_empty());
        assert_eq!(shipped.len(), 48);
        assert_eq!(shipped[2], Ligand { title: "ibuprofen".into(), smiles: "CC(C)Cc1ccc(cc1)C(C)C(=O)O".into() });
        let (quoted, _) = read_ligands("ID,SMILES,TITLE\n7,\"C(=O)O\",\"formic, acid\"\n".as_bytes(), "x").unwrap();
        assert_eq!(quoted, [Ligand { title: "formic, acid".into(), smiles: "C(=O)O".into() }]);
        assert!(read_ligands("TITLE,SMILES\n".as_bytes(), "x.csv").unwrap_err().contains("x.csv holds no ligands"));
        let (twice, repeated) = read_ligands("TITLE,SMILES\na,CCO\nb,CCN\nc,CCO\n".as_bytes(), "x.csv").unwrap();
        let titles: Vec<&str> = twice.iter().map(|l| l.title.as_str()).collect();
        assert_eq!(titles, ["a", "b"], "a repeated SMILES is docked once, as its first row");
        assert_eq!(
            repeated,
            ["x.csv: 1 ligand(s) repeat an earlier SMILES and are not docked again", "c (row 4, same SMILES as a)"]
        );
        assert!(
            read_ligands("TITLE,SMILES\na,\n".as_bytes(), "x.csv").unwrap_err().contains("row 2 has an empty SMILES")
        );
    }
}
