//! `process-pool`: N `taps-worker` child processes on this node, tasks and results as
//! [`protocol`] frames in two rings of memory shared with each worker (its [`Doorbell`]
//! mapping), those of more than 4 KiB or carrying descriptors over one Unix socket pair per
//! worker, announced in the ring. The queue, prefetch, in-flight
//! tracking, lost workers and heartbeats are the [remote-worker core](super::remote)'s; this
//! module is its transport (starting, feeding, watching and reaping the processes) and options.
//!
//! Per worker the driver keeps a writer thread (a 100 MB argument never blocks the engine's
//! dispatcher) and a reader thread (turns `Done` frames into [`Completion`](crate::engine::Completion)s). A thread that
//! waits for a result (the app's) takes the frames a worker rang for itself while it polls (the
//! pool registers its workers' inboxes as a [`crate::spin::Helper`]), so in a busy run a result goes
//! from the worker to the thread that waits for it; the reader threads sleep on the workers'
//! doorbell pages meanwhile, and a worker wakes its reader only when no thread polls. Up to
//! [`PREFETCH`] tasks are sent to a worker ahead, so it never idles between tasks; it runs them
//! one at a time, in order.
//!
//! A worker that dies fails the task it was running with a `WorkerLost` error naming its pid and
//! signal; tasks queued behind it go to the other workers, and a replacement is started. A worker
//! holding a task that sends no heartbeat (a thread of its own writes one to a second socket) for
//! `heartbeat_timeout` — stopped, or hung — is reported, killed and handled the same way. Workers
//! live in their own process group (a terminal's Ctrl-C or hang-up, or a signal to the driver's
//! group, reaches only the driver, which records everything and then stops them) and get SIGKILL
//! if the driver dies (`PR_SET_PDEATHSIG`, set by the worker itself).
//!
//! ```no_run
//! use taps::engine::{Engine, builtin::Sleep};
//! use taps::executor::process_pool::ProcessPool;
//!
//! let engine = Engine::builder(Box::new(ProcessPool::new(2))).build();
//! let f = engine.submit::<Sleep>((0.0.into(),));
//! assert_eq!(f.result().unwrap(), 0.0);
//! engine.shutdown();
//! ```

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::data::DataLayer;
use crate::engine::{Completer, Executor, Job};
use crate::options::Validate;
use crate::protocol::{self, Doorbell, Entry, Frame, FromWorker, Message, ProtocolError, Side, ToWorker};

use super::remote::{Link, RemoteExecutor, RemoteOptions, Transport, heartbeat_interval};
use super::{ExecutorConfig, ExecutorContext, ExecutorPlugin, WorkerKind, Workers, available_cores};

crate::opt_enum! {
    /// Python's multiprocessing start method (accepted for config compatibility).
    pub(crate) enum StartMethod {
        /// Fork the driver.
        Fork = "fork",
        /// Start a fresh interpreter.
        Spawn = "spawn",
        /// Fork from a server process.
        Forkserver = "forkserver",
    }
}

crate::options! {
    /// Options of the `process-pool` executor.
    pub(crate) struct ProcessPoolOptions {
        /// Number of worker processes (none = the cores available where the run executes).
        max_processes: Option<usize> = None,
        /// The worker program, taps or taps-worker (default: $TAPS_WORKER, else the running taps itself).
        worker_path: Option<PathBuf> = None,
        /// Accepted for compatibility with Python configs and ignored: workers are always fresh taps-worker processes.
        context: Option<StartMethod> = None,
        /// Seconds a worker holding a task may go without a heartbeat before it is reported, killed and replaced (its task fails with WorkerLost); heartbeats come from a thread of their own, so a long task on a live worker is never lost.
        #[skip_default] heartbeat_timeout: f64 = 60.0,
    }
}

impl Validate for ProcessPoolOptions {
    fn validate(&self) -> Result<(), String> {
        if self.max_processes == Some(0) {
            return Err("engine.executor.max_processes must be at least 1".into());
        }
        if !(self.heartbeat_timeout.is_finite() && self.heartbeat_timeout > 0.0) {
            return Err(format!(
                "engine.executor.heartbeat_timeout must be a positive number of seconds, not {}",
                self.heartbeat_timeout
            ));
        }
        Ok(())
    }
}

/// The plugin entry.
pub const PLUGIN: ExecutorPlugin = crate::plugin!(
    dyn ExecutorConfig,
    ProcessPoolOptions,
    "process-pool",
    "taps-worker processes on this node (tasks and results serialised over Unix sockets)"
);

impl ExecutorConfig for ProcessPoolOptions {
    fn get_executor(&self, ctx: &ExecutorContext) -> anyhow::Result<Box<dyn Executor>> {
        let path = locate_worker(self.worker_path.as_deref()).map_err(anyhow::Error::msg)?;
        Ok(Box::new(
            ProcessPool::new(self.processes())
                .worker_path(path)
                .heartbeat_timeout(Duration::from_secs_f64(self.heartbeat_timeout))
                .with_env(ctx.env_vars.clone()),
        ))
    }

    fn preflight(&self) -> Result<(), String> {
        locate_worker(self.worker_path.as_deref()).map(|_| ())
    }

    fn workers(&self) -> Option<Workers> {
        self.max_processes.map(|n| Workers { key: "max_processes", count: n as u64, kind: WorkerKind::Processes })
    }
}

impl ProcessPoolOptions {
    fn processes(&self) -> usize {
        self.max_processes.unwrap_or_else(available_cores)
    }
}

/// Environment variable naming the taps-worker binary (overrides the search next to the executable).
pub(crate) const WORKER_ENV: &str = "TAPS_WORKER";

/// Finds the program that serves as taps-worker (always started as `PROGRAM worker ARGS`):
/// `explicit`, else `$TAPS_WORKER` (each checked to be a taps worker of this protocol), else
/// this very executable when it is `taps` or `taps-worker` — so the driver and its workers are
/// always the same build — else `taps` next to the running executable or one directory up (test
/// binaries live in `target/*/deps`).
pub(crate) fn locate_worker(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return check_worker(p).map_err(|why| format!("engine.executor.worker_path {}: {}", p.display(), why));
    }
    if let Some(p) = std::env::var_os(WORKER_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return check_worker(&p).map_err(|why| format!("{}={}: {}", WORKER_ENV, p.display(), why));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the running executable: {}", e))?;
    let stem = exe.file_stem().unwrap_or_default().to_string_lossy();
    if stem == "taps" || stem == "taps-worker" {
        return Ok(exe);
    }
    let name = format!("taps{}", std::env::consts::EXE_SUFFIX);
    let dirs: Vec<&Path> = exe.ancestors().skip(1).take(2).collect();
    for d in &dirs {
        let c = d.join(&name);
        if check_executable(&c).is_ok() {
            return Ok(c);
        }
    }
    Err(format!(
        "cannot find the taps binary to start workers with (looked in {}); build it with `cargo build --bins`, or set \
         engine.executor.worker-path or {}",
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" and "),
        WORKER_ENV
    ))
}

/// Checks that `p` is a taps or taps-worker program speaking this protocol version.
fn check_worker(p: &Path) -> Result<PathBuf, String> {
    let p = check_executable(p)?;
    let mut child = Command::new(&p)
        .args([crate::worker::WORKER_COMMAND, "--protocol-version"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run it: {}", e))?;
    // A program that is not a taps worker may do anything: give it a few seconds, then stop it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut o, &mut out);
    }
    match out.trim().parse::<u32>() {
        Ok(v) if v == crate::protocol::PROTOCOL_VERSION => Ok(p),
        Ok(v) => Err(format!(
            "a taps worker of protocol version {} but this taps speaks {}; use the taps-worker built with this taps",
            v,
            crate::protocol::PROTOCOL_VERSION
        )),
        Err(_) => Err("not a taps worker (`worker --protocol-version` did not answer with a protocol version)".into()),
    }
}

fn check_executable(p: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(p).map_err(|e| e.to_string())?;
    if !m.is_file() {
        return Err("not a file".into());
    }
    if m.permissions().mode() & 0o111 == 0 {
        return Err("not executable".into());
    }
    std::path::absolute(p).map_err(|e| e.to_string())
}

/// Tasks sent ahead to one worker (the one running plus the queued ones).
pub(crate) const PREFETCH: usize = 2;
/// A slot whose worker fails to start this many times in a row is given up.
const MAX_START_FAILURES: u32 = 3;
/// How long start-up waits for the workers' `Ready`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful shutdown waits before killing workers.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a worker that closed its connection may take to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Default of `heartbeat_timeout`.
pub(crate) const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs jobs on `taps-worker` child processes: the [remote-worker core](super::remote) over
/// Unix socket pairs.
pub struct ProcessPool {
    processes: usize,
    worker_path: Option<PathBuf>,
    heartbeat_timeout: Duration,
    env: Vec<(String, String)>,
    watch: PoolWatch,
    inner: Option<(RemoteExecutor, PathBuf)>,
}

/// A view of a running pool's workers (for tests and diagnostics).
#[derive(Clone, Default)]
pub struct PoolWatch(Arc<Mutex<WatchState>>, Arc<Taken>);

/// Frames from the workers, by who read them.
#[derive(Default)]
struct Taken {
    /// Threads waiting for results (the [`Inboxes`] helper).
    waiting: AtomicU64,
    /// The pool's reader threads.
    readers: AtomicU64,
}

#[derive(Default)]
struct WatchState {
    pids: Vec<u32>,
    started: u64,
}

impl PoolWatch {
    /// Pids of the live worker processes.
    pub fn pids(&self) -> Vec<u32> {
        self.0.lock().unwrap().pids.clone()
    }

    /// Worker processes started so far (replacements included).
    pub fn started(&self) -> u64 {
        self.0.lock().unwrap().started
    }

    /// Frames from the workers read by threads waiting for results, and by the pool's reader
    /// threads (see the module documentation).
    pub fn frames_taken(&self) -> (u64, u64) {
        (self.1.waiting.load(SeqCst), self.1.readers.load(SeqCst))
    }
}

impl ProcessPool {
    /// A pool of `processes` workers (started with the engine), using [`locate_worker`]'s binary.
    pub fn new(processes: usize) -> Self {
        ProcessPool {
            processes: processes.max(1),
            worker_path: None,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            env: Vec::new(),
            watch: PoolWatch::default(),
            inner: None,
        }
    }

    /// Uses this taps-worker binary.
    pub fn worker_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker_path = Some(path.into());
        self
    }

    /// A worker holding a task that sends no heartbeat for `timeout` is killed and replaced.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// Starts the workers with these environment variables added to (or replacing those of)
    /// the driver's environment (the run's `env_vars`); the driver's own environment is not
    /// changed.
    pub fn with_env(mut self, vars: Vec<(String, String)>) -> Self {
        self.env = vars;
        self
    }

    /// A handle on the live workers' pids.
    pub fn watch(&self) -> PoolWatch {
        self.watch.clone()
    }
}

impl Executor for ProcessPool {
    fn start(&mut self, done: Completer, data: Arc<DataLayer>) -> anyhow::Result<()> {
        let path = match &self.worker_path {
            Some(p) => p.clone(),
            None => locate_worker(None).map_err(anyhow::Error::msg)?,
        };
        let pool = Arc::new_cyclic(|me| Pool {
            me: me.clone(),
            slots: self.processes,
            path: path.clone(),
            heartbeat_interval: heartbeat_interval(self.heartbeat_timeout),
            env: self.env.clone(),
            watch: self.watch.clone(),
            state: Mutex::new(PoolState::default()),
            cv: Condvar::new(),
            inboxes: Arc::default(),
            helping: Mutex::new(None),
        });
        let opts = RemoteOptions {
            prefetch: PREFETCH,
            heartbeat_timeout: self.heartbeat_timeout,
            start_timeout: START_TIMEOUT,
            max_start_failures: MAX_START_FAILURES,
            ..RemoteOptions::new("process-pool")
        };
        let mut ex = RemoteExecutor::new(pool, opts);
        if let Err(e) = ex.start(done, data) {
            anyhow::bail!("process-pool: cannot start taps-worker ({}): {}", path.display(), e);
        }
        tracing::debug!("Started {} taps-worker process(es): {:?}", self.processes, self.watch.pids());
        self.inner = Some((ex, path));
        Ok(())
    }

    fn needs_wire(&self) -> bool {
        true
    }

    fn submit(&mut self, job: Job) {
        if let Some((ex, _)) = &mut self.inner {
            ex.submit(job);
        }
    }

    fn shutdown(&mut self, cancel: bool) {
        if let Some((mut ex, _)) = self.inner.take() {
            ex.shutdown(cancel);
        }
    }

    fn describe(&self) -> String {
        format!("ProcessPool(max_processes={})", self.processes)
    }

    fn direct(&self) -> bool {
        true
    }
}

/// The process-pool transport: `taps-worker` children, one socket pair each for frames and
/// one for heartbeats.
struct Pool {
    /// Itself, for the threads it starts.
    me: Weak<Pool>,
    slots: usize,
    path: PathBuf,
    heartbeat_interval: Duration,
    env: Vec<(String, String)>,
    watch: PoolWatch,
    state: Mutex<PoolState>,
    /// Signalled when a worker is reaped.
    cv: Condvar,
    /// The live workers' incoming frames, for the threads that wait for results ([`Inboxes`]).
    inboxes: Arc<Inboxes>,
    /// The inboxes' registration as a [`crate::spin::Helper`] while the pool runs.
    helping: Mutex<Option<crate::spin::Registered>>,
}

#[derive(Default)]
struct PoolState {
    link: Option<Link>,
    /// Every worker process not yet reaped, by id.
    procs: HashMap<u64, Proc>,
    /// The current worker of each slot.
    current: Vec<Option<u64>>,
    next_id: u64,
    closing: bool,
    spawn_tx: Option<Sender<Spawn>>,
    spawner: Option<JoinHandle<()>>,
    threads: Vec<JoinHandle<()>>,
}

/// One worker process.
struct Proc {
    pid: u32,
    /// The connection, for direct sends of small frames.
    conn: Arc<UnixStream>,
    /// The writer thread's queue (None once shutdown began).
    tx: Option<Sender<Outgoing>>,
    /// Items handed to the writer thread and not yet fully written.
    queued: usize,
    /// The driver's end of the worker's heartbeat socket (non-blocking).
    heartbeat: UnixStream,
    /// When the last heartbeat arrived.
    heard: Instant,
    /// The page shared with the worker: rung after each write to `conn`.
    bell: Arc<Doorbell>,
}

/// What the writer thread writes.
enum Outgoing {
    Frame(Frame),
    /// The rest of a frame whose start was sent directly.
    Raw(Vec<u8>),
}

/// Frames up to this size are sent from the calling thread when the writer thread is idle
/// (one thread hop less per task); larger ones always go through the writer thread.
const DIRECT_MAX: usize = 64 << 10;

impl Proc {
    /// Sends a frame in order: in the worker's ring if it may travel inline
    /// ([`Doorbell::put_frame`]), else through the socket, announced in the ring first: directly
    /// if small and nothing is queued, else via the writer thread. Errors are ignored: a broken
    /// connection shows up in the reader as the worker's loss.
    fn send(&mut self, frame: Frame) {
        let Some(tx) = &self.tx else { return };
        if self.bell.put_frame(Side::ToWorker, &frame) {
            self.bell.ring_worker();
            return;
        }
        if !self.bell.put_on_socket(Side::ToWorker, false) {
            // At most PREFETCH + 1 tasks are out to a worker: one that has not taken the ring's
            // 64 KiB of entries is stuck. Its reader reports it lost; its tasks go elsewhere.
            tracing::warn!("process-pool: worker pid {} takes no frames; killing it", self.pid);
            self.kill();
            return;
        }
        if self.queued == 0 && frame.len() <= DIRECT_MAX {
            let buf = frame.to_vec();
            match send_nonblocking(&self.conn, &buf) {
                Some(n) if n == buf.len() => self.bell.ring_worker(),
                Some(n) => {
                    self.bell.ring_worker();
                    self.queued += 1;
                    let _ = tx.send(Outgoing::Raw(buf[n..].to_vec()));
                }
                None => {} // broken connection
            }
            return;
        }
        self.bell.ring_worker();
        self.queued += 1;
        let _ = tx.send(Outgoing::Frame(frame));
    }

    /// SIGKILLs the process (its pid is still ours: it is reaped only once removed).
    fn kill(&self) {
        // SAFETY: plain syscall; the pid is our unreaped child.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
    }
}

enum Spawn {
    Slot(usize),
    Stop,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current<'a>(&self, st: &'a mut PoolState, slot: usize) -> Option<&'a mut Proc> {
        let id = st.current.get(slot).copied().flatten()?;
        st.procs.get_mut(&id)
    }

    fn update_watch(&self, st: &PoolState) {
        self.watch.0.lock().unwrap().pids = st.procs.values().map(|p| p.pid).collect();
    }
}

impl Transport for Pool {
    fn slots(&self) -> usize {
        self.slots
    }

    fn start(&self, link: Link) -> anyhow::Result<()> {
        let (tx, rx) = unbounded();
        {
            let mut st = self.lock();
            st.link = Some(link);
            st.current = vec![None; self.slots];
            st.spawn_tx = Some(tx.clone());
        }
        // All workers are started from this one long-lived thread: PR_SET_PDEATHSIG fires when the
        // starting *thread* exits, so short-lived threads must not start them.
        *self.helping.lock().unwrap() = Some(crate::spin::register(self.inboxes.clone()));
        let me = self.arc();
        let spawner = std::thread::Builder::new().name("taps-pool-spawner".into()).spawn(move || spawner(me, rx))?;
        self.lock().spawner = Some(spawner);
        for i in 0..self.slots {
            let _ = tx.send(Spawn::Slot(i));
        }
        Ok(())
    }

    fn send(&self, slot: usize, frame: Frame) {
        let mut st = self.lock();
        if let Some(p) = self.current(&mut st, slot) {
            p.send(frame);
        }
    }

    fn describe(&self, slot: usize) -> String {
        let mut st = self.lock();
        match self.current(&mut st, slot) {
            Some(p) => format!("worker pid {}", p.pid),
            None => format!("worker {}", slot),
        }
    }

    fn heard(&self, slot: usize) -> Option<Instant> {
        let mut st = self.lock();
        let p = self.current(&mut st, slot)?;
        if drain(&p.heartbeat) {
            p.heard = Instant::now();
        }
        Some(p.heard)
    }

    fn kill(&self, slot: usize) -> bool {
        let mut st = self.lock();
        let Some(p) = self.current(&mut st, slot) else { return false };
        p.kill();
        // Its reader reaps it; the slot is free for a replacement now.
        st.current[slot] = None;
        true
    }

    fn replace(&self, slot: usize) -> bool {
        let st = self.lock();
        !st.closing && st.spawn_tx.as_ref().is_some_and(|tx| tx.send(Spawn::Slot(slot)).is_ok())
    }

    fn stop(&self, cancel: bool, _alive: &[bool]) {
        // Waiting threads take no more frames (this waits for one that is taking some).
        drop(self.helping.lock().unwrap().take());
        let mut st = self.lock();
        st.closing = true;
        for p in st.procs.values_mut() {
            if cancel {
                p.kill();
            } else {
                p.send(ToWorker::Shutdown.encode());
            }
            // Writers finish what is queued (the Shutdown frame), then exit.
            p.tx = None;
        }
        // Wait for every worker to exit; after the grace period, kill the rest.
        let deadline = Instant::now() + if cancel { Duration::ZERO } else { SHUTDOWN_GRACE };
        let mut killed = cancel;
        while !st.procs.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() && !killed {
                st.procs.values().for_each(Proc::kill);
                killed = true;
            }
            let wait = if killed { Duration::from_millis(100) } else { left };
            st = self.cv.wait_timeout(st, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
        let spawn_tx = st.spawn_tx.take();
        let spawner = st.spawner.take();
        drop(st);
        if let Some(tx) = spawn_tx {
            let _ = tx.send(Spawn::Stop);
        }
        if let Some(h) = spawner {
            let _ = h.join();
        }
        // The spawner may have started threads for a worker it then killed.
        let threads = std::mem::take(&mut self.lock().threads);
        for t in threads {
            let _ = t.join();
        }
        let mut st = self.lock();
        st.link = None;
        self.update_watch(&st);
        // The workers are gone: shared memory kept for reuse is of no more use.
        crate::shm::drop_idle();
    }
}

impl Pool {
    /// This pool as an `Arc` (it is built in one: see [`ProcessPool::start`]).
    fn arc(&self) -> Arc<Pool> {
        self.me.upgrade().expect("the pool lives in an Arc")
    }
}

fn spawner(pool: Arc<Pool>, rx: Receiver<Spawn>) {
    while let Ok(Spawn::Slot(slot)) = rx.recv() {
        let link = {
            let st = pool.lock();
            if st.closing {
                continue;
            }
            st.link.clone()
        };
        let Some(link) = link else { continue };
        match spawn_process(&pool.path, pool.heartbeat_interval, &pool.env) {
            Ok(spawned) => install(&pool, &link, slot, spawned),
            Err(e) => link.start_failed(slot, format!("cannot start {}: {}", pool.path.display(), e)),
        }
    }
}

/// Registers a freshly started worker, says Hello, and starts its threads.
fn install(pool: &Arc<Pool>, link: &Link, slot: usize, spawned: Spawned) {
    let Spawned { pid, conn: stream, heartbeat, bell } = spawned;
    let streams = stream.try_clone().and_then(|w| Ok((w, stream.try_clone()?)));
    let mut st = pool.lock();
    let (wstream, rstream) = match streams {
        Ok(s) if !st.closing => s,
        other => {
            // SAFETY: plain syscalls on our own unreaped child.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
                libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
            }
            drop(st);
            if let Err(e) = other {
                link.start_failed(slot, format!("cannot set up the worker connection: {}", e));
            }
            return;
        }
    };
    let id = st.next_id;
    st.next_id += 1;
    let (tx, rx) = unbounded();
    let conn = Arc::new(stream);
    let mut p =
        Proc { pid, conn: conn.clone(), tx: Some(tx), queued: 0, heartbeat, heard: Instant::now(), bell: bell.clone() };
    p.send(link.hello(format!("worker-{}", slot)));
    st.procs.insert(id, p);
    st.current[slot] = Some(id);
    pool.watch.0.lock().unwrap().started += 1;
    pool.update_watch(&st);
    drop(st);
    link.started(slot, id);
    let mut st = pool.lock();
    let (s, b) = (pool.clone(), bell.clone());
    let w =
        std::thread::Builder::new().name(format!("taps-pool-w{}", pid)).spawn(move || writer(s, id, wstream, rx, b));
    let (s, l, b) = (pool.clone(), link.clone(), bell.clone());
    let r = std::thread::Builder::new()
        .name(format!("taps-pool-r{}", pid))
        .spawn(move || reader(s, l, slot, id, pid, rstream, b));
    for t in [w, r] {
        match t {
            Ok(h) => st.threads.push(h),
            Err(e) => {
                tracing::error!("process-pool: cannot start a thread: {}", e);
                // Without its threads the worker is useless: stop it; the reader (if any) reports it.
                let _ = conn.shutdown(std::net::Shutdown::Both);
                bell.wake_worker();
            }
        }
    }
}

/// Writes frames to one worker until the channel closes or the worker is gone.
fn writer(pool: Arc<Pool>, id: u64, stream: UnixStream, rx: Receiver<Outgoing>, bell: Arc<Doorbell>) {
    let mut out = BufWriter::with_capacity(1 << 16, &stream);
    let ok = (|| -> io::Result<()> {
        while let Ok(item) = rx.recv() {
            write_item(&mut out, item)?;
            let mut n = 1;
            // Batch whatever else is queued into the same flush.
            while let Ok(item) = rx.try_recv() {
                write_item(&mut out, item)?;
                n += 1;
            }
            out.flush()?;
            // Everything handed over so far is in the socket: direct sends may resume.
            if let Some(p) = pool.lock().procs.get_mut(&id) {
                p.queued -= n;
            }
        }
        Ok(())
    })();
    if ok.is_err() {
        // Make sure the worker sees the end of the stream (and exits) if it is still alive.
        drop(out);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        bell.wake_worker();
    }
}

/// One worker's incoming frames. Its reader thread sleeps on the worker's doorbell page and
/// reads them when woken; a thread waiting for a result (a [`crate::spin::Helper`]: see
/// [`Inboxes`]) takes the frames the worker rang for first, so in a busy run a completion goes
/// to the waiting thread without waking another. The worker rings once per frame, after its
/// entry is in the ring ([`Doorbell::put_frame`]): a rung frame is taken without a system call.
/// A frame that came through the socket (announced by its entry) is read by the reader thread
/// only, as it may block until the worker has written it.
struct Inbox {
    slot: usize,
    id: u64,
    link: Link,
    bell: Arc<Doorbell>,
    fd: i32,
    /// Frames read so far.
    taken: AtomicU64,
    /// The pool's count of frames by who read them.
    taken_by: Arc<Taken>,
    io: Mutex<InboxIo>,
}

struct InboxIo {
    input: BufReader<Plain>,
    /// Descriptors (shared-memory segments) that came with bytes read and are not yet taken by
    /// a frame: the threads taking turns keep them here, not in their own thread's queue.
    fds: VecDeque<OwnedFd>,
    /// The stream ended (`Some(None)`) or broke (`Some(Some(error))`).
    end: Option<Option<ProtocolError>>,
}

/// Plain blocking reads of a worker's socket that keep the descriptors passed with the bytes.
struct Plain(UnixStream);

impl io::Read for Plain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match crate::shm::recv(self.0.as_raw_fd(), buf, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

/// Whether the peer of socket `fd` closed it (exited or died), now.
fn hung_up(fd: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: one valid pollfd, no waiting.
    unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 }
}

impl Inbox {
    /// Takes and hands over the frames the worker rang for; the reader thread (`reader`) also
    /// those that come through the socket, and the socket's end. A helper gives up at once if
    /// another thread is reading. Whether it handed over anything.
    fn take(&self, reader: bool) -> bool {
        let mut io = if reader {
            self.io.lock().unwrap_or_else(|e| e.into_inner())
        } else {
            match self.io.try_lock() {
                Ok(io) => io,
                Err(_) => return false,
            }
        };
        let io = &mut *io;
        if io.end.is_some() {
            return false;
        }
        crate::shm::restore_received(&mut io.fds);
        let mut did = false;
        loop {
            let rung = || self.bell.rung(Side::ToDriver) > self.taken.load(SeqCst);
            let mut entry = rung();
            // The socket's end (a system call) only when the ring is empty, and the ring once
            // more after it: entries put before the worker died are taken before its end.
            let hung_up = reader && !entry && hung_up(self.fd);
            if hung_up {
                entry = rung();
            }
            let got = if entry {
                match self.bell.next(Side::ToDriver, reader) {
                    Ok(Entry::Inline(bytes)) => Frame::from_bytes(bytes.into()).and_then(FromWorker::decode).map(Some),
                    Ok(Entry::OnSocket { whole }) if reader || whole => protocol::recv::<FromWorker, _>(&mut io.input),
                    // A frame still being written is left to the reader thread (reading it may block).
                    Ok(Entry::OnSocket { .. }) | Ok(Entry::Empty) => break,
                    Err(e) => Err(e),
                }
            } else if hung_up {
                // The worker exited or died: a frame it wrote without its entry, then the end.
                protocol::recv::<FromWorker, _>(&mut io.input)
            } else {
                break;
            };
            match got {
                Ok(Some(m)) => {
                    if entry {
                        self.taken.fetch_add(1, SeqCst);
                    }
                    let by = if reader { &self.taken_by.readers } else { &self.taken_by.waiting };
                    by.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    did = true;
                    self.link.message(self.slot, self.id, m);
                }
                Ok(None) | Err(ProtocolError::Io(_)) => {
                    io.end = Some(None);
                    break;
                }
                Err(e) => {
                    io.end = Some(Some(e));
                    break;
                }
            }
        }
        crate::shm::stash_received(&mut io.fds);
        did
    }

    /// The end of the stream, once seen.
    fn ended(&self) -> Option<Option<ProtocolError>> {
        self.io.lock().unwrap_or_else(|e| e.into_inner()).end.take()
    }
}

/// The live workers' inboxes, registered as a [`crate::spin::Helper`] while the pool runs.
#[derive(Default)]
struct Inboxes(Mutex<Vec<Arc<Inbox>>>);

impl crate::spin::Helper for Inboxes {
    fn help(&self) -> bool {
        let Ok(all) = self.0.try_lock() else { return false };
        let mut did = false;
        for ib in all.iter() {
            if ib.bell.rung(Side::ToDriver) > ib.taken.load(SeqCst) {
                did |= ib.take(false);
            }
        }
        did
    }

    /// The last waiting thread stopped polling: the readers sleep so that the workers wake them.
    fn idle(&self) {
        for ib in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            ib.bell.wake_reader();
        }
    }
}

/// How long a reader sleeps on its doorbell page at most before it looks at the socket (the
/// end of the stream: a worker that exited or died rings no more).
const READER_CHECK: Duration = Duration::from_millis(20);
/// The same while threads waiting for results take the frames: the workers do not wake the
/// reader then (when the last of them stops polling, it wakes the readers).
const READER_CHECK_HELPED: Duration = Duration::from_millis(1);

/// Reads one worker's frames (with the threads that wait for results: [`Inbox`]); on end of
/// stream, reaps it and reports its loss.
fn reader(pool: Arc<Pool>, link: Link, slot: usize, id: u64, pid: u32, stream: UnixStream, bell: Arc<Doorbell>) {
    let inbox = Arc::new(Inbox {
        slot,
        id,
        link: link.clone(),
        bell: bell.clone(),
        fd: stream.as_raw_fd(),
        taken: AtomicU64::new(0),
        taken_by: pool.watch.1.clone(),
        io: Mutex::new(InboxIo {
            input: BufReader::with_capacity(1 << 16, Plain(stream)),
            fds: VecDeque::new(),
            end: None,
        }),
    });
    pool.inboxes.0.lock().unwrap_or_else(|e| e.into_inner()).push(inbox.clone());
    let protocol_error = loop {
        inbox.take(true);
        if let Some(end) = inbox.ended() {
            break end;
        }
        let rung = bell.rung(Side::ToDriver);
        if rung > inbox.taken.load(SeqCst) {
            continue;
        }
        // Sleep until the worker rings again (or starts a big frame, or the check is due).
        if crate::spin::helpers_polling() {
            bell.sleep_reader(rung, READER_CHECK_HELPED, false);
        } else {
            bell.sleep_reader(rung, READER_CHECK, true);
        }
    };
    pool.inboxes.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|i| !Arc::ptr_eq(i, &inbox));
    if protocol_error.is_some() {
        // SAFETY: our unreaped child; a worker that speaks garbage is stopped.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    let status = wait_exit(pid);
    {
        let mut st = pool.lock();
        // SAFETY: our child, already exited (wait_exit); this releases the pid.
        unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
        st.procs.remove(&id);
        if st.current[slot] == Some(id) {
            st.current[slot] = None;
        }
        pool.update_watch(&st);
        pool.cv.notify_all();
    }
    let why = protocol_error.map(|e| format!(" after a {}", e)).unwrap_or_default();
    link.lost(slot, id, format!("worker pid {} died ({}){}", pid, status, why));
}

fn write_item(out: &mut BufWriter<&UnixStream>, item: Outgoing) -> io::Result<()> {
    match item {
        // Shared-memory segments go as descriptors, not through the socket.
        Outgoing::Frame(f) => f.write_to_socket(out),
        Outgoing::Raw(b) => out.write_all(&b),
    }
}

/// How a worker process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {}", c),
            ExitStatus::Signal(s) => match signal_hook::low_level::signal_name(*s) {
                Some(n) => write!(f, "signal {}, {}", s, n),
                None => write!(f, "signal {}", s),
            },
        }
    }
}

/// Waits until `pid` has exited, leaving it unreaped (a zombie keeps the pid ours).
/// A worker that closed its connection but lingers is killed after [`EXIT_GRACE`].
fn wait_exit(pid: u32) -> ExitStatus {
    let start = Instant::now();
    let mut pause = Duration::from_micros(100);
    let mut killed = false;
    loop {
        let flags = libc::WEXITED | libc::WNOWAIT | if killed { 0 } else { libc::WNOHANG };
        // SAFETY: zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: plain syscall with a valid out-pointer.
        let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if rc == 0 {
            // SAFETY: waitid filled in a SIGCHLD siginfo (si_pid 0 means not exited yet).
            let (got, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
            if got != 0 {
                return match code {
                    libc::CLD_EXITED => ExitStatus::Code(status),
                    _ => ExitStatus::Signal(status),
                };
            }
        } else {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                // ECHILD: already reaped elsewhere; nothing more to learn.
                return ExitStatus::Code(-1);
            }
        }
        if !killed && start.elapsed() >= EXIT_GRACE {
            // SAFETY: our unreaped child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            killed = true;
            continue;
        }
        if !killed {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

/// Reads whatever heartbeats are waiting; whether there were any.
fn drain(mut s: &UnixStream) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 64];
    let mut got = false;
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got = true;
    }
    got
}

/// Sends what fits without blocking; the bytes sent, or None if the connection is broken.
fn send_nonblocking(conn: &UnixStream, buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at < buf.len() {
        // SAFETY: valid buffer and open socket; MSG_NOSIGNAL avoids SIGPIPE on a dead peer.
        let n = unsafe {
            libc::send(
                conn.as_raw_fd(),
                buf[at..].as_ptr() as *const libc::c_void,
                buf.len() - at,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            at += n as usize;
            continue;
        }
        match io::Error::last_os_error().kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => return Some(at),
            _ => return None,
        }
    }
    Some(at)
}

/// Send buffer asked for on both ends of a worker connection (the kernel caps it at
/// `net.core.wmem_max`): large payloads then move in fewer, larger steps.
const SOCKET_BUFFER: usize = 4 << 20;

fn set_send_buffer(s: &UnixStream, bytes: usize) {
    let v = bytes as libc::c_int;
    // SAFETY: valid socket and option value; a failure just leaves the default size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The worker's fds for its connection and its heartbeat socket.
const WORKER_CONN_FD: i32 = 3;
const WORKER_HEARTBEAT_FD: i32 = 4;
const WORKER_DOORBELL_FD: i32 = 5;

/// A freshly started worker: its pid, connection and heartbeat socket (driver ends).
struct Spawned {
    pid: u32,
    conn: UnixStream,
    heartbeat: UnixStream,
    bell: Arc<Doorbell>,
}

/// Starts the worker program `path` as `taps-worker worker --pipe-fd 3 --heartbeat-fd 4
/// --doorbell-fd 5 …` (named `taps-worker` in `ps`) with the other ends of two fresh socket pairs
/// on fds 3 and 4 and a fresh [`Doorbell`] page on fd 5, in its own
/// process group, stdin from `/dev/null`, and the driver's environment plus `env`.
///
/// It uses `posix_spawn`, never `fork`: a fork runs the `pthread_atfork` handlers of every library
/// in the driver, and OpenBLAS's handler waits for its threads — forever if the driver is running
/// BLAS at that moment (a worker replaced while cholesky computes its residual hung the run).
/// The worker sets its own parent-death signal (`--parent-pid`), which `posix_spawn` cannot.
fn spawn_process(path: &Path, heartbeat_interval: Duration, env: &[(String, String)]) -> io::Result<Spawned> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (conn, theirs) = UnixStream::pair()?;
    let (heartbeat, hb_theirs) = UnixStream::pair()?;
    for s in [&conn, &theirs] {
        set_send_buffer(s, SOCKET_BUFFER);
    }
    heartbeat.set_nonblocking(true)?;
    // Above the target fds, so that placing one cannot overwrite the other (close-on-exec here).
    let high = |s: &dyn AsRawFd| -> io::Result<std::os::fd::OwnedFd> {
        // SAFETY: duplicating an open descriptor; the result is owned below.
        let fd = unsafe { libc::fcntl(s.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    };
    let bell = Arc::new(Doorbell::create()?);
    let (conn_fd, hb_fd, bell_fd) = (high(&theirs)?, high(&hb_theirs)?, high(&bell.fd())?);
    drop((theirs, hb_theirs));
    let cstr = |b: &[u8]| CString::new(b).map_err(|_| io::Error::other("a NUL byte in an argument"));
    let program = cstr(path.as_os_str().as_bytes())?;
    let argv: Vec<CString> = [
        b"taps-worker".as_slice(),
        crate::worker::WORKER_COMMAND.as_bytes(),
        b"--pipe-fd",
        WORKER_CONN_FD.to_string().as_bytes(),
        b"--heartbeat-fd",
        WORKER_HEARTBEAT_FD.to_string().as_bytes(),
        b"--doorbell-fd",
        WORKER_DOORBELL_FD.to_string().as_bytes(),
        b"--heartbeat-interval",
        format!("{}", heartbeat_interval.as_secs_f64()).as_bytes(),
        b"--parent-pid",
        std::process::id().to_string().as_bytes(),
    ]
    .iter()
    .map(|a| cstr(a))
    .collect::<io::Result<_>>()?;
    // The driver's environment with the run's variables on top (never set_var in the driver).
    let envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| !env.iter().any(|(n, _)| k.as_bytes() == n.as_bytes()))
        .map(|(k, v)| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .chain(env.iter().map(|(k, v)| cstr(format!("{}={}", k, v).as_bytes())))
        .collect::<io::Result<_>>()?;
    let ptrs = |v: &[CString]| {
        v.iter().map(|c| c.as_ptr() as *mut libc::c_char).chain([std::ptr::null_mut()]).collect::<Vec<_>>()
    };
    let (argv_p, envp_p) = (ptrs(&argv), ptrs(&envp));
    let check = |rc: libc::c_int| if rc == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(rc)) };
    let mut pid: libc::pid_t = 0;
    // SAFETY: the attribute and file-action objects are initialised before use and destroyed
    // after; every pointer handed to posix_spawn outlives the call.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        check(libc::posix_spawnattr_init(&mut attr))?;
        let mut defaults: libc::sigset_t = std::mem::zeroed();
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut defaults);
        libc::sigemptyset(&mut mask);
        for s in [libc::SIGPIPE, libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::sigaddset(&mut defaults, s);
        }
        let rc = (|| {
            check(libc::posix_spawn_file_actions_addopen(&mut actions, 0, c"/dev/null".as_ptr(), libc::O_RDONLY, 0))?;
            check(libc::posix_spawn_file_actions_adddup2(&mut actions, conn_fd.as_raw_fd(), WORKER_CONN_FD))?;
            check(libc::posix_spawn_file_actions_adddup2(&mut actions, hb_fd.as_raw_fd(), WORKER_HEARTBEAT_FD))?;
            check(libc::posix_spawn_file_actions_adddup2(&mut actions, bell_fd.as_raw_fd(), WORKER_DOORBELL_FD))?;
            let flags = libc::POSIX_SPAWN_SETPGROUP | libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK;
            check(libc::posix_spawnattr_setflags(&mut attr, flags as libc::c_short))?;
            check(libc::posix_spawnattr_setpgroup(&mut attr, 0))?;
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &defaults))?;
            check(libc::posix_spawnattr_setsigmask(&mut attr, &mask))?;
            check(libc::posix_spawn(&mut pid, program.as_ptr(), &actions, &attr, argv_p.as_ptr(), envp_p.as_ptr()))
        })();
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        rc?;
    }
    Ok(Spawned { pid: pid as u32, conn, heartbeat, bell })
}
