//! `mpi`: rsmpi over the system MPI. Rank 0 is the driver (it runs the app and the engine);
//! ranks 1..N-1 are workers that run tasks by name ([`crate::worker::Worker`] over MPI).
//!
//! Two ways in, one run directory:
//!
//! * inside a job: `mpirun -np N taps-worker -c run.toml` (or `srun --mpi=pmix … taps-worker …`).
//!   Every rank initialises MPI; rank 0 then behaves like `taps run` ([`crate::mpi_job::worker_main`]);
//! * from an interactive node: `taps run --engine.executor mpi --engine.executor.ranks N`. taps
//!   creates the run directory and its `config.toml`, then starts the job itself through a launch
//!   profile (`launchers/profiles.rs`) with `--run-dir` pointing at that directory, so rank
//!   0 writes the log and records there; taps streams the job's output and returns rank 0's
//!   exit status, which rank 0 writes to a status file ([`launch`]).
//!
//! On rank 0 MPI calls are made under one lock, by a communication thread and, when every rank
//! is on rank 0's node, by the threads that submit tasks and wait for results ([`driver`]); frames of the worker
//! [`protocol`](crate::protocol) travel as non-blocking point-to-point messages ([`transport`]),
//! or, between rank 0 and a rank on its node, through a pair of shared-memory rings (`lane`).
//! A rank that dies is noticed at once through a TCP liveness connection ([`liveness`]): its
//! running task fails with `WorkerLost` naming the rank, its queued tasks go to the other ranks,
//! and the run ends with an error naming it. For that, OpenMPI must not kill the job when a
//! rank dies: the launch profiles set `OMPI_MCA_orte_enable_recovery=1` (`mpirun
//! --enable-recovery`). Without recovery mpirun kills every rank about a second after the death,
//! so rank 0 fails every unfinished task at once instead, while it can still record them.
//! After a lost rank no process calls `MPI_Finalize` (it would wait for the dead rank forever).
//! A rank that sends no heartbeat for `heartbeat_timeout` while it holds a task (stopped, hung)
//! is lost the same way; its process may still be there, so rank 0 then ends the job with
//! `MPI_Abort` once every task is recorded.
//!
//! Signals. mpirun puts every rank in a process group of its own, so a Ctrl-C reaches mpirun
//! (and `taps run`), not the ranks; mpirun then sends the ranks SIGCONT, SIGTERM one second
//! later and SIGKILL one more second later (`odls_base_sigkill_timeout`, 1 s). Rank 0 takes
//! SIGINT, SIGTERM, SIGHUP and SIGUSR1 alike: it fails every unfinished task at once as
//! interrupted, records them, and ends the job (`MPI_Abort`, exit code 130) well before the
//! SIGKILL. Worker ranks outlive these signals for a while, so the interrupt is not mistaken for
//! lost ranks. `taps run`, when it started the job, passes a signal on to mpirun as SIGUSR1,
//! which mpirun (and srun) forward to every rank: rank 0 stops at once.

pub mod driver;
mod lane;
pub mod launch;
pub mod liveness;
pub mod rank;
pub mod transport;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use crate::engine::Executor;
use crate::options::Validate;

use super::{ExecutorConfig, ExecutorContext, ExecutorPlugin, Launch, MpiJob, available_cores};

crate::options! {
    /// Options of the `mpi` executor.
    pub(crate) struct MpiOptions {
        /// MPI ranks in all, rank 0 (the driver) included, when taps starts the job (default: cores + 1); inside a job the world size counts.
        ranks: usize = available_cores() + 1,
        /// Launch profile that starts the job from taps run: mpirun, mpiexec, srun, or one of your own (launchers/README.md).
        launcher: String = "mpirun".into(),
        /// Extra launcher arguments, split like a shell (e.g. "--hostfile hosts --bind-to none").
        launcher_args: String = String::new(),
        /// A TOML file of launch profiles added to the built-in ones and ~/.config/taps/launchers.toml.
        launcher_profile: Option<PathBuf> = None,
        /// The worker program, taps or taps-worker (default: $TAPS_WORKER, else the running taps itself).
        worker_path: Option<PathBuf> = None,
        /// Tasks sent ahead to each worker rank (the running one included).
        prefetch: usize = 2,
        /// Seconds without a heartbeat from a worker rank that holds a task before it is reported and treated as lost (stopped or hung).
        heartbeat_timeout: f64 = 60.0,
    }
}

impl Validate for MpiOptions {
    fn validate(&self) -> Result<(), String> {
        if self.ranks < 2 {
            return Err(format!(
                "engine.executor.ranks must be at least 2 (rank 0 drives, the others run tasks), got {}",
                self.ranks
            ));
        }
        if self.prefetch == 0 {
            return Err("engine.executor.prefetch must be at least 1".into());
        }
        if !(self.heartbeat_timeout.is_finite() && self.heartbeat_timeout > 0.0) {
            return Err(format!(
                "engine.executor.heartbeat_timeout must be a positive number of seconds, got {}",
                self.heartbeat_timeout
            ));
        }
        crate::shell::split(&self.launcher_args).map_err(|e| format!("engine.executor.launcher_args: {}", e))?;
        Ok(())
    }
}

/// The plugin entry.
pub const PLUGIN: ExecutorPlugin = crate::plugin!(
    dyn ExecutorConfig,
    MpiOptions,
    "mpi",
    "MPI ranks (rsmpi): rank 0 drives, ranks 1..N-1 run tasks; mpirun taps-worker, or started by taps run"
);

impl ExecutorConfig for MpiOptions {
    fn get_executor(&self, _: &ExecutorContext) -> anyhow::Result<Box<dyn Executor>> {
        let Some(&size) = WORLD.get() else {
            anyhow::bail!("the mpi executor runs inside an MPI job (mpirun taps-worker), or through taps run");
        };
        if self.ranks != size as usize && self.ranks != MpiOptions::default().ranks {
            tracing::info!(
                "mpi: the job has {} ranks (engine.executor.ranks = {} applies when taps starts the job)",
                size,
                self.ranks
            );
        }
        let heartbeat = std::time::Duration::from_secs_f64(self.heartbeat_timeout);
        Ok(Box::new(driver::MpiExecutor::new(size, self.prefetch, heartbeat, lost())))
    }

    fn preflight(&self) -> Result<(), String> {
        if in_world() {
            return Ok(());
        }
        if let Some(v) = RANK_ENV.iter().find(|v| std::env::var_os(v).is_some()) {
            return Err(format!(
                "taps run is running as an MPI rank ({} is set); under mpirun or srun start `taps-worker -c FILE` \
                 instead (rank 0 drives, the other ranks run tasks)",
                v
            ));
        }
        // The launcher, its profile and arguments are checked by the harness (`taps::mpi_launch`).
        Ok(())
    }

    fn launch(&self) -> Launch {
        if in_world() {
            return Launch::Here;
        }
        Launch::MpiJob(MpiJob {
            ranks: self.ranks,
            launcher: self.launcher.clone(),
            launcher_args: self.launcher_args.clone(),
            launcher_profile: self.launcher_profile.clone(),
            worker_path: self.worker_path.clone(),
        })
    }
}

/// Size of the MPI world when this process is rank 0 of a taps MPI job.
static WORLD: OnceLock<i32> = OnceLock::new();

/// Descriptions of the worker ranks lost during the run.
static LOST: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();

fn lost() -> Arc<Mutex<Vec<String>>> {
    LOST.get_or_init(Default::default).clone()
}

/// Fails every unfinished task of rank 0's executor at once as interrupted (a signal).
pub fn interrupt() {
    driver::interrupt();
}

/// Whether this process is rank 0 of a running taps MPI job.
pub(crate) fn in_world() -> bool {
    WORLD.get().is_some()
}

/// Environment variables that MPI launchers set in their ranks.
const RANK_ENV: &[&str] = &["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"];

/// The MPI library's version (first line), e.g. `Open MPI v4.1.4, package: Debian OpenMPI, ...`.
pub(crate) fn library_version() -> Option<String> {
    ::mpi::environment::library_version().ok().map(|s| {
        let s = s.trim_end_matches('\0');
        s.lines().next().unwrap_or("").trim().trim_end_matches(',').to_string()
    })
}

/// The message for a world of one rank.
pub(crate) fn singleton_error(size: i32) -> String {
    format!(
        "mpi executor needs at least 2 ranks; got a world of {} — mpirun/srun started N singletons? check --mpi=pmix \
         (srun with OpenMPI), or start with mpirun -np N",
        size
    )
}

/// This process's part in an MPI job: MPI is initialised (thread level Serialized or more, MPI
/// errors returned rather than fatal) and finalised when the session is dropped.
///
/// Library use, under `mpirun -np N`: rank 0 builds an [`Engine`](crate::engine::Engine) on
/// [`Session::executor`], the other ranks call [`Session::serve`] (see `examples/mpi_engine.rs`).
pub struct Session {
    universe: Option<::mpi::environment::Universe>,
    rank: i32,
    size: i32,
    skip_finalize: std::cell::Cell<bool>,
}

impl Session {
    /// Initialises MPI; fails with one line if MPI cannot start or the world has one rank.
    pub fn init() -> Result<Session, String> {
        let universe = match ::mpi::initialize_with_threading(::mpi::Threading::Serialized) {
            Some((u, t)) if t >= ::mpi::Threading::Serialized => u,
            Some((_, t)) => {
                return Err(format!(
                    "the MPI library gives thread level {:?}; taps needs at least Serialized (rank 0's threads \
                     call MPI one at a time)",
                    t
                ));
            }
            None => return Err("MPI was already initialised".into()),
        };
        transport::errors_return();
        let (rank, size) = transport::rank_and_size();
        if size < 2 {
            return Err(singleton_error(size));
        }
        Ok(Session { universe: Some(universe), rank, size, skip_finalize: Default::default() })
    }

    /// This process's rank.
    pub fn rank(&self) -> i32 {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> i32 {
        self.size
    }

    /// Ranks 1..N-1: serves rank 0 until it says `Shutdown` (or is gone); the exit code.
    pub fn serve(&self) -> i32 {
        assert!(self.rank > 0, "rank 0 drives; it does not serve");
        let (code, lost) = rank::serve(self.rank);
        if lost {
            self.skip_finalize.set(true);
        }
        code
    }

    /// Rank 0: the executor over ranks 1..N-1 (one per session), sending up to `prefetch`
    /// tasks ahead to each rank (heartbeat timeout: the option's default).
    pub fn executor(&self, prefetch: usize) -> driver::MpiExecutor {
        assert_eq!(self.rank, 0, "only rank 0 drives");
        let _ = WORLD.set(self.size);
        let heartbeat = std::time::Duration::from_secs_f64(MpiOptions::default().heartbeat_timeout);
        driver::MpiExecutor::new(self.size, prefetch, heartbeat, lost())
    }

    /// Rank 0 of a taps MPI job: from now on the mpi executor builds on this world.
    pub(crate) fn become_driver(&self) {
        assert_eq!(self.rank, 0, "only rank 0 drives");
        let _ = WORLD.set(self.size);
    }

    /// Rank 0, after the run: releases worker ranks that never heard from the driver, and ends
    /// the whole job at once when a rank is still in a task (interrupted run), stopped or hung
    /// (the records are written; waiting for it could take for ever). Returns `code` otherwise.
    pub(crate) fn finish_driver(self, code: i32) -> i32 {
        if !DRIVER_STARTED.load(std::sync::atomic::Ordering::SeqCst) {
            release_workers();
        }
        if driver::left_ranks_running() || driver::lost_a_silent_rank() {
            self.abort(code);
        }
        code
    }

    /// The worker ranks lost so far, described (rank, pid, host).
    pub fn lost_ranks(&self) -> Vec<String> {
        lost().lock().unwrap().clone()
    }

    /// Ends the whole job at once with `code` (every rank stops).
    pub fn abort(self, code: i32) -> ! {
        transport::abort(code)
    }
}

impl Drop for Session {
    /// Finalises MPI, unless a rank was lost: then `MPI_Finalize` would wait for it forever
    /// (OpenMPI 4.1 with recovery), so the process just exits.
    fn drop(&mut self) {
        let u = self.universe.take();
        if self.skip_finalize.get() || !lost().lock().unwrap().is_empty() {
            std::mem::forget(u);
        }
    }
}

pub(crate) static DRIVER_STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Rank 0 ends before its executor started: tell the waiting workers to exit.
fn release_workers() {
    let (_, size) = transport::rank_and_size();
    let mut sends: Vec<transport::Sending> = (1..size)
        .filter_map(|r| {
            transport::send_frame(r, crate::protocol::Message::encode(crate::protocol::ToWorker::Shutdown)).ok()
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        sends.retain_mut(|s| !s.test().unwrap_or(true));
        if sends.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::mem::forget(sends);
}
