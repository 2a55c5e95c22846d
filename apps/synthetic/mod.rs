//! `synthetic`: no-op task graphs (bag, diamond, reduce, sequential) with configurable payloads
//! and sleeps, for measuring executor overhead and data movement.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng, rngs::SmallRng};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::app::{App, AppConfig, AppPlugin, Footprint};
use crate::engine::{Completions, Engine, TaskFuture, as_completed, builtin::Warmup};
use crate::options::{MAX_SECONDS, Validate, check_seconds};
use crate::task::{Arg, Many, Registry, Task, TaskError};
use crate::{app_info, opt_enum};

opt_enum! {
    /// Shape of the synthetic workflow.
    pub(crate) enum Structure {
        /// Independent tasks, at most `bag-max-running` in flight.
        Bag = "bag",
        /// One task, N tasks depending on it, one task depending on those N.
        Diamond = "diamond",
        /// N independent tasks and one task depending on all of them.
        Reduce = "reduce",
        /// A chain of N tasks, each depending on the previous one.
        Sequential = "sequential",
    }
}

crate::options! {
    /// Options of the `synthetic` app.
    pub(crate) struct SyntheticOptions {
        /// Workflow structure.
        structure: Structure,
        /// Number of tasks in the workflow (warmup tasks not included).
        task_count: u64,
        /// Bytes of random data each task receives and returns.
        task_data_bytes: u64 = 0,
        /// Seconds each task sleeps (mean, if task-std > 0).
        task_sleep: f64 = 0.0,
        /// Standard deviation of the task sleep in seconds (0 = every task sleeps task-sleep).
        task_std: f64 = 0.0,
        /// Tasks in flight at once for the bag structure (required for bag).
        bag_max_running: Option<u64> = None,
        /// No-op tasks run and awaited before the workflow starts.
        warmup_tasks: u64 = 0,
        /// Seed for sleep durations and data (none = a fresh seed each run).
        seed: Option<u64> = None,
    }
}

impl Validate for SyntheticOptions {
    fn validate(&self) -> Result<(), String> {
        if self.structure == Structure::Bag {
            match self.bag_max_running {
                None => {
                    return Err("app.bag_max_running is required when app.structure is bag \
                                (set --app.bag-max-running N, N >= 1)"
                        .into());
                }
                Some(0) => return Err("app.bag_max_running must be at least 1".into()),
                _ => {}
            }
        }
        // A normal draw never strays 10 standard deviations, so sleeps stay below the clock's limit.
        check_seconds("app.task_sleep", self.task_sleep, MAX_SECONDS)?;
        check_seconds("app.task_std", self.task_std, MAX_SECONDS / 10.0)?;
        Ok(())
    }
}

/// The plugin entry.
pub const PLUGIN: AppPlugin = AppPlugin {
    plugin: crate::plugin!(
        dyn AppConfig,
        SyntheticOptions,
        "synthetic",
        "synthetic no-op workflows: bag, diamond, reduce, sequential"
    ),
    register_tasks,
};

/// Memory the engine keeps for each task whose future is held, at least (measured: 400 B to
/// 1 KiB on the thread-pool executor).
const TASK_BYTES: u64 = 256;

/// At least: for every task held at once (the bag's running ones, the N results a reduce or
/// diamond task waits for, every future of a sequential chain or of the warmup) its engine state
/// and the data it holds.
fn footprint(o: &SyntheticOptions) -> Footprint {
    let (n, d) = (o.task_count, o.task_data_bytes);
    let held = |tasks: u64, data: u64| tasks.saturating_mul(TASK_BYTES.saturating_add(data));
    let (workflow, why) = match o.structure {
        Structure::Bag => {
            let cap = o.bag_max_running.unwrap_or(1).min(n);
            let why =
                format!("app.bag_max_running = {} tasks in flight with app.task_data_bytes = {} in and out", cap, d);
            (held(cap, d.saturating_mul(2)), why)
        }
        Structure::Diamond | Structure::Reduce => {
            let why = format!("app.task_count = {} results of app.task_data_bytes = {} held for the last task", n, d);
            (held(n, d), why)
        }
        Structure::Sequential => {
            let why = format!("app.task_count = {} chained tasks submitted at once", n);
            (held(n, 0).saturating_add(d.saturating_mul(2)), why)
        }
    };
    let warmup = held(o.warmup_tasks, 0);
    let (memory_bytes, why) = if warmup > workflow {
        (warmup, format!("app.warmup_tasks = {} tasks submitted at once", o.warmup_tasks))
    } else {
        (workflow, why)
    };
    Footprint { memory_bytes, memory_for: why, files: Vec::new() }
}

fn register_tasks(r: &mut Registry) {
    r.add::<Noop>();
}

impl AppConfig for SyntheticOptions {
    fn get_app(&self, _: &Path) -> anyhow::Result<Box<dyn App>> {
        let opts = self.clone();
        Ok(Box::new(SyntheticApp::new(opts)))
    }

    fn footprint(&self) -> Footprint {
        footprint(self)
    }
}

/// Random bytes with their checksum, so the receiving task can verify what arrived.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Data {
    /// The payload (read in place from a large received payload, [`crate::shm::borrow`]).
    #[serde(deserialize_with = "crate::shm::bytes_in_place")]
    pub raw: bytes::Bytes,
    /// [`checksum`] of `raw`.
    pub checksum: u64,
}

crate::task_arg!(Data);

impl Data {
    /// `size` random bytes.
    pub fn random(size: usize, rng: &mut impl RngCore) -> Data {
        let mut v = vec![0u8; size];
        rng.fill_bytes(&mut v);
        let checksum = checksum(&v);
        Data { raw: v.into(), checksum }
    }

    /// Whether the bytes still match the checksum.
    pub fn verify(&self) -> bool {
        checksum(&self.raw) == self.checksum
    }
}

/// A fast 64-bit checksum (word-wise multiply-xor), enough to catch corruption in transit.
pub fn checksum(b: &[u8]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15 ^ b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap());
        h = (h ^ w).wrapping_mul(0x0100_0000_01B3).rotate_left(29);
    }
    for &x in chunks.remainder() {
        h = (h ^ x as u64).wrapping_mul(0x0100_0000_01B3);
    }
    h
}

/// `noop(*data, output_size, sleep, task_id)`: verifies its inputs, makes `output_size` random
/// bytes, sleeps what remains of `sleep`, returns the bytes.
pub(crate) struct Noop;

impl Task for Noop {
    const NAME: &'static str = "noop";
    type Args = (Many<Data>, u64, f64, String);
    type Output = Data;
    fn run((inputs, output_size, sleep, task_id): Self::Args) -> Result<Data, TaskError> {
        let start = Instant::now();
        for (i, d) in inputs.0.iter().enumerate() {
            if !d.verify() {
                return Err(TaskError::exception(
                    "CorruptData",
                    format!("input {} of task {} ({} bytes) does not match its checksum", i, task_id, d.raw.len()),
                ));
            }
        }
        // A per-thread generator seeded once: a no-op task makes no getrandom call (it was
        // about 1 % of the CPU in throughput runs).
        thread_local! {
            static RNG: std::cell::RefCell<SmallRng> = std::cell::RefCell::new(SmallRng::from_os_rng());
        }
        let out = RNG.with(|r| Data::random(output_size as usize, &mut *r.borrow_mut()));
        let left = sleep - start.elapsed().as_secs_f64();
        if left > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(left));
        }
        Ok(out)
    }
}

/// The synthetic workflow.
pub(crate) struct SyntheticApp {
    opts: SyntheticOptions,
    rng: SmallRng,
    sleep: Option<Normal<f64>>,
}

impl SyntheticApp {
    /// An app with these options.
    pub fn new(opts: SyntheticOptions) -> Self {
        let rng = match opts.seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_os_rng(),
        };
        let sleep = (opts.task_std > 0.0).then(|| Normal::new(opts.task_sleep, opts.task_std).unwrap());
        SyntheticApp { opts, rng, sleep }
    }

    /// A sleep length: the mean, or a normal draw clamped at 0 when task-std > 0.
    fn length(&mut self) -> f64 {
        match &self.sleep {
            None => self.opts.task_sleep,
            Some(n) => n.sample(&mut self.rng).max(0.0),
        }
    }

    fn fresh(&mut self) -> Data {
        Data::random(self.opts.task_data_bytes as usize, &mut self.rng)
    }

    fn noop(&mut self, engine: &Engine, inputs: Vec<Arg<Data>>, sleep: f64) -> TaskFuture<Data> {
        let id = uuid::Uuid::from_u128(self.rng.random()).to_string();
        engine.submit::<Noop>((inputs, self.opts.task_data_bytes.into(), sleep.into(), id.into()))
    }

    fn check(&self, f: &TaskFuture<Data>) -> anyhow::Result<()> {
        let d = f.result()?;
        anyhow::ensure!(d.verify(), "task {} returned data that does not match its checksum", f.task_id());
        anyhow::ensure!(
            d.raw.len() as u64 == self.opts.task_data_bytes,
            "task {} returned {} bytes, expected {}",
            f.task_id(),
            d.raw.len(),
            self.opts.task_data_bytes
        );
        Ok(())
    }

    fn warmup(&mut self, engine: &Engine) -> anyhow::Result<()> {
        let n = self.opts.warmup_tasks;
        if n == 0 {
            app_info!("Skipping warmup tasks");
            return Ok(());
        }
        app_info!("Submitting {} warmup task(s)", n);
        let futures: Vec<_> = (0..n).map(|_| engine.submit::<Warmup>(())).collect();
        for f in as_completed(futures, None) {
            f?.result()?;
        }
        app_info!("Warmup task(s) completed");
        Ok(())
    }

    fn bag(&mut self, engine: &Engine) -> anyhow::Result<()> {
        let n = self.opts.task_count;
        let cap = self.opts.bag_max_running.unwrap_or(1).min(n.max(1));
        let start = Instant::now();
        let mut running = Completions::new();
        let mut submitted = 0u64;
        while submitted < cap.min(n) {
            let (data, sleep) = (self.fresh(), self.length());
            running.push(self.noop(engine, vec![data.into()], sleep));
            submitted += 1;
        }
        app_info!("Submitted {} initial tasks", submitted);
        let mut completed = 0u64;
        while let Some(f) = running.next() {
            self.check(&f)?;
            completed += 1;
            if submitted < n {
                let (data, sleep) = (self.fresh(), self.length());
                running.push(self.noop(engine, vec![data.into()], sleep));
                submitted += 1;
            }
            if completed.is_multiple_of(cap) && completed < n {
                app_info!(
                    "Completed {}/{} tasks (rate: {:.2} tasks/s, running tasks: {})",
                    completed,
                    n,
                    completed as f64 / start.elapsed().as_secs_f64(),
                    running.pending()
                );
            }
        }
        app_info!(
            "Completed {}/{} (rate: {:.2} tasks/s)",
            completed,
            n,
            completed as f64 / start.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn diamond(&mut self, engine: &Engine) -> anyhow::Result<()> {
        let sleep = self.opts.task_sleep;
        let data = self.fresh();
        let initial = self.noop(engine, vec![data.into()], sleep);
        app_info!("Submitted initial task");
        app_info!("Submitting {} intermediate tasks", self.opts.task_count);
        let middle: Vec<_> = (0..self.opts.task_count)
            .map(|_| {
                let s = self.length();
                self.noop(engine, vec![(&initial).into()], s)
            })
            .collect();
        let last = self.noop(engine, middle.iter().map(Arg::from).collect(), sleep);
        app_info!("Submitted final task");
        self.check(&last)?;
        app_info!("Final task completed");
        Ok(())
    }

    fn reduce(&mut self, engine: &Engine) -> anyhow::Result<()> {
        let firsts: Vec<_> = (0..self.opts.task_count)
            .map(|_| {
                let (d, s) = (self.fresh(), self.length());
                self.noop(engine, vec![d.into()], s)
            })
            .collect();
        app_info!("Submitted {} initial tasks", firsts.len());
        let s = self.length();
        let last = self.noop(engine, firsts.iter().map(Arg::from).collect(), s);
        app_info!("Submitted reduce task");
        self.check(&last)?;
        app_info!("Reduce task completed");
        Ok(())
    }

    fn sequential(&mut self, engine: &Engine) -> anyhow::Result<()> {
        let n = self.opts.task_count;
        let start = Instant::now();
        let mut chain: Vec<TaskFuture<Data>> = Vec::with_capacity(n as usize);
        for i in 0..n {
            let input: Arg<Data> = match chain.last() {
                None => self.fresh().into(),
                Some(prev) => prev.into(),
            };
            let s = self.length();
            let f = self.noop(engine, vec![input], s);
            app_info!("Submitted task {}/{} (task_id={})", i + 1, n, f.task_id());
            chain.push(f);
        }
        for (i, f) in as_completed(chain.clone(), None).enumerate() {
            let f = f?;
            app_info!("Received task {}/{} (task_id: {})", i + 1, n, f.task_id());
        }
        if let Some(last) = chain.last() {
            self.check(last)?;
        }
        app_info!("Task completion rate: {:.3} tasks/s", n as f64 / start.elapsed().as_secs_f64());
        Ok(())
    }
}

impl App for SyntheticApp {
    fn run(&mut self, engine: &Engine, _run_dir: &Path) -> anyhow::Result<()> {
        self.warmup(engine)?;
        app_info!("Starting {} workflow", self.opts.structure);
        match self.opts.structure {
            Structure::Bag => self.bag(engine),
            Structure::Diamond => self.diamond(engine),
            Structure::Reduce => self.reduce(engine),
            Structure::Sequential => self.sequential(engine),
        }
    }
}
