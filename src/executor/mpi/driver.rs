//! Rank 0's executor: the [remote-worker core](crate::executor::remote) over MPI. Its transport
//! is the communication state behind one lock (MPI runs `MPI_THREAD_SERIALIZED`: any thread may
//! make MPI calls, one at a time): a communication thread that drives it, fed by a channel from
//! the core (frames to send, ranks to forget, shutdown) and from the liveness watcher (a rank's
//! process ended); a thread that submits a task sends its frame itself when the lock is free; and
//! a thread waiting for results polls MPI itself (a [`crate::spin::Helper`]), taking the answers
//! as they arrive: no hand-off between threads of rank 0 on a task's way out or back. While
//! waiting threads do that, the communication thread sleeps in steps of [`HELPED_CHECK`]; the
//! last one to stop waiting wakes it. A rank on rank 0's node gets its frames through a
//! shared-memory [lane](super::lane), and rank 0 polls MPI only while some rank is not on a lane
//! or an MPI message is under way (or announced in a lane).
//!
//! The core sends up to `prefetch` tasks ahead to each worker rank, least loaded first, so a rank
//! finds its next task waiting when it finishes one. The thread spins for `SPIN` (1 ms) after the
//! last thing that happened (yielding the CPU now and then), keeps spinning while a message is
//! under way, then backs off to sleeping up to `MAX_PAUSE` (1 ms) while answers are due, and blocks on
//! its channel when nothing is outstanding at all. A rank that answers after a long task rings
//! rank 0's liveness watcher, which wakes the thread through its channel; a task sent to a rank
//! that has waited longer than it spins rings that rank ([`liveness`](super::liveness)'s doorbell).
//!
//! A rank whose process ends fails its running task with `WorkerLost` naming the rank, pid and
//! host; the tasks queued behind it go to the other ranks (a dead MPI rank cannot be replaced).
//! So does a rank that sends no heartbeat for `heartbeat_timeout` while it holds a task (stopped
//! or hung). When no rank is left, every remaining task fails at once.
//!
//! [`interrupt`] (rank 0's signal handler) fails every task the executor holds at once, as
//! interrupted: under mpirun, rank 0 hears of a Ctrl-C only through the SIGTERM that comes one
//! second before SIGKILL, so it cannot wait for running tasks.
//!
//! At the end of a run, rank 0 tells every rank `Shutdown` and waits until each has closed its
//! liveness connection (it does so on `Shutdown`) before closing its own side: a rank never
//! takes rank 0's close for its death while the `Shutdown` is still on its way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, bounded, unbounded};

use crate::data::DataLayer;
use crate::engine::{Completer, Executor, Job};
use crate::executor::remote::{Link, RemoteExecutor, RemoteOptions, Transport, heartbeat_interval};
use crate::protocol::{Frame, FromWorker, Message, ToWorker};
use crate::spin;

use super::lane::{Lane, page_name};
use super::liveness::{Beats, Event, Watcher};
use super::transport::{
    Inbox, Sending, TAG_FRAME, TAG_LOST, TAG_SHM, TAG_WATCH, send_frame, send_frame_shared, send_text,
};

/// How long start-up waits for every rank's `Ready`.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// After a rank is ready, how long to wait for its liveness connection if it is still on its way.
const WATCH_GRACE: Duration = Duration::from_secs(5);
/// Spin this long after the last progress before sleeping.
const SPIN: Duration = Duration::from_millis(1);
/// While spinning, yield the CPU every this many polls.
const YIELD_EVERY: u32 = 16;
/// Spin this long while a message is under way.
const TRANSFER_SPIN: Duration = Duration::from_millis(20);
/// A rank waiting this long for work is dozing (it spins 1 ms, from before rank 0 saw its last
/// answer): work sent to it rings its doorbell.
const RING_AFTER: Duration = Duration::from_micros(800);
/// Longest sleep between polls while answers are due.
const MAX_PAUSE: Duration = Duration::from_millis(1);
/// At the end of a run, how long to wait for every rank to take its `Shutdown`.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// At the end of an interrupted run, how long to wait for the ranks to take their `Shutdown`
/// (a rank in the middle of a task takes it only afterwards).
const CANCEL_TIMEOUT: Duration = Duration::from_millis(300);
/// How much longer than its own deadline stopping waits for the communication thread.
const STOP_GRACE: Duration = Duration::from_millis(150);
/// While threads waiting for results poll MPI (or did so since the last look), the
/// communication thread looks this often.
const HELPED_CHECK: Duration = Duration::from_millis(1);

/// The running executor's core, for [`interrupt`].
static ACTIVE: Mutex<Option<Link>> = Mutex::new(None);
/// Whether a rank was lost to silence: its process may still be there, so only ending the whole
/// job (`MPI_Abort`) stops it.
static HUNG: AtomicBool = AtomicBool::new(false);
/// Whether a rank had not taken its `Shutdown` when the executor stopped.
static LEFT_RUNNING: AtomicBool = AtomicBool::new(false);

/// Interrupts the running executor: every task it holds fails at once as interrupted, and so
/// does every task submitted later. Safe to call from any thread, any number of times.
pub fn interrupt() {
    let link = ACTIVE.lock().unwrap().clone();
    if let Some(link) = link {
        link.interrupt();
    }
}

/// Whether a rank was lost because it went silent (stopped or hung) rather than dead.
pub(crate) fn lost_a_silent_rank() -> bool {
    HUNG.load(Ordering::SeqCst)
}

/// Whether a live rank had not taken its `Shutdown` when the executor stopped (an interrupted
/// run does not wait for running tasks): only ending the whole job stops it.
pub(crate) fn left_ranks_running() -> bool {
    LEFT_RUNNING.load(Ordering::SeqCst)
}

/// Rank 0's MPI executor (inside an MPI job of `size` ranks).
pub struct MpiExecutor {
    size: i32,
    inner: RemoteExecutor,
}

impl MpiExecutor {
    /// An executor over ranks 1..size, sending up to `prefetch` tasks ahead to each; a rank
    /// silent for `heartbeat_timeout` while it holds a task is lost. Lost ranks are described
    /// in `lost`.
    pub fn new(size: i32, prefetch: usize, heartbeat_timeout: Duration, lost: Arc<Mutex<Vec<String>>>) -> Self {
        let transport = Arc::new(Ranks {
            size,
            heartbeat_timeout,
            tx: Mutex::new(None),
            thread: Mutex::new(None),
            beats: Mutex::new(None),
            who: Arc::new(Mutex::new(vec![None; (size - 1).max(0) as usize])),
            lost: lost.clone(),
            shm: Mutex::new(None),
            comm: std::sync::OnceLock::new(),
            helping: Mutex::new(None),
        });
        let opts = RemoteOptions {
            prefetch,
            heartbeat_timeout,
            start_timeout: START_TIMEOUT,
            max_start_failures: 1,
            loss_ends_job: super::launch::launcher_kills_job()
                .then(|| "mpirun (without --enable-recovery) stops the whole job".into()),
            losses: lost,
            ..RemoteOptions::new("mpi")
        };
        MpiExecutor { size, inner: RemoteExecutor::new(transport, opts) }
    }
}

impl Executor for MpiExecutor {
    fn start(&mut self, done: Completer, data: Arc<DataLayer>) -> anyhow::Result<()> {
        super::DRIVER_STARTED.store(true, Ordering::SeqCst);
        // Every process of an MPI job polls (MPI's own waits spin; the ranks and the
        // communication thread poll SPIN after the last message): rank 0's waiting threads poll
        // as long (unless TAPS_SPIN_US says otherwise), so that a rank that lost its core for a
        // moment does not turn every wait into a sleep and a wake-up.
        crate::spin::prefer_budget(SPIN);
        self.inner.start(done, data).map_err(|e| anyhow::anyhow!("mpi: {}", e))
    }

    fn needs_wire(&self) -> bool {
        true
    }

    fn submit(&mut self, job: Job) {
        self.inner.submit(job);
    }

    fn shutdown(&mut self, cancel: bool) {
        self.inner.shutdown(cancel);
    }

    fn describe(&self) -> String {
        format!("Mpi(ranks={}, workers={}, prefetch={})", self.size, self.size - 1, self.inner.options().prefetch)
    }

    fn direct(&self) -> bool {
        self.inner.direct()
    }
}

/// The MPI transport: worker rank `r` is slot `r - 1`; every MPI call is made under the
/// communication state's lock.
struct Ranks {
    size: i32,
    heartbeat_timeout: Duration,
    tx: Mutex<Option<Sender<Cmd>>>,
    /// The communication thread, and a channel that disconnects when it ends.
    thread: Mutex<Option<(JoinHandle<()>, Receiver<()>)>>,
    beats: Mutex<Option<Arc<Beats>>>,
    /// Each rank's pid and host, once it is ready (noted by the communication thread).
    who: Who,
    lost: Arc<Mutex<Vec<String>>>,
    /// The run's named shared-memory segments (removed at stop).
    shm: Mutex<Option<crate::shm::Run>>,
    /// The communication state, once started.
    comm: std::sync::OnceLock<Arc<Shared>>,
    /// Its registration as a [`spin::Helper`] while the executor runs.
    helping: Mutex<Option<spin::Registered>>,
}

impl Ranks {
    fn cmd(&self, c: Cmd) {
        if let Some(tx) = self.tx.lock().unwrap().as_ref() {
            let _ = tx.send(c);
        }
    }
}

/// What the communication thread is doing, for threads that send a frame themselves.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Polling MPI (or sleeping while waiting threads do): it sees a direct send's answer.
    Polling = 0,
    /// Sleeping up to [`MAX_PAUSE`] between polls: a direct send wakes it unless threads poll.
    Napping = 1,
    /// Blocked on its channel (nothing outstanding): a direct send wakes it.
    Asleep = 2,
}

/// Wake-ups of the communication thread, which only that thread takes. Any thread that holds
/// the lock takes the commands waiting (a direct send, a waiting thread's poll): a wake-up sent
/// as a command could be taken by one of them, right after another thread sent it, and leave the
/// communication thread asleep with answers due — a run that never ends.
struct Alarm {
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl Alarm {
    fn new() -> Alarm {
        // One pending wake-up is enough, however many threads ring before the thread looks.
        let (tx, rx) = bounded(1);
        Alarm { tx, rx }
    }

    /// Wakes the communication thread (now, or as soon as it next waits).
    fn ring(&self) {
        let _ = self.tx.try_send(());
    }

    /// The communication thread's wait: the next command from `cmds`, or `None` once rung;
    /// at most `timeout` (`None`: until one of them comes).
    fn wait<T>(&self, cmds: &Receiver<T>, timeout: Option<Duration>) -> Result<Option<T>, RecvTimeoutError> {
        let cmd = |m: Result<T, _>| m.map(Some).map_err(|_| RecvTimeoutError::Disconnected);
        match timeout {
            Some(t) => crossbeam_channel::select! {
                recv(cmds) -> m => cmd(m),
                recv(self.rx) -> _ => Ok(None),
                default(t) => Err(RecvTimeoutError::Timeout),
            },
            None => crossbeam_channel::select! {
                recv(cmds) -> m => cmd(m),
                recv(self.rx) -> _ => Ok(None),
            },
        }
    }
}

/// The communication state and how to reach its thread.
struct Shared {
    comm: Mutex<Comm>,
    rx: Receiver<Cmd>,
    alarm: Alarm,
    /// The thread's [`Mode`], set under the lock.
    mode: std::sync::atomic::AtomicU8,
    /// Polls by waiting threads that found something, so far.
    helped: std::sync::atomic::AtomicU64,
    /// No more direct sends (the executor is stopping).
    closed: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Comm> {
        self.comm.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, Comm>> {
        match self.comm.try_lock() {
            Ok(c) => Some(c),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    fn set_mode(&self, m: Mode) {
        self.mode.store(m as u8, Ordering::Release);
    }
}

/// The communication state as a [`spin::Helper`]: a waiting thread takes what has arrived.
struct Helping {
    shared: Arc<Shared>,
}

impl spin::Helper for Helping {
    fn help(&self) -> bool {
        if self.shared.closed.load(Ordering::Acquire) {
            return false;
        }
        let Some(mut c) = self.shared.try_lock().filter(|c| c.direct) else { return false };
        let did = c.step(&self.shared.rx, true);
        if did {
            self.shared.helped.fetch_add(1, Ordering::Relaxed);
        }
        // The commands it took may be other threads' sends (made while this thread held the
        // lock): with the communication thread asleep on its channel, their answers would wait
        // for a thread that may not come. Wake it, as a direct send does.
        if self.shared.mode.load(Ordering::Acquire) == Mode::Asleep as u8 && c.active() {
            self.shared.set_mode(Mode::Polling);
            drop(c);
            self.shared.alarm.ring();
        }
        did
    }

    /// The last waiting thread stopped: the communication thread takes over at once.
    fn idle(&self) {
        self.shared.alarm.ring();
    }
}

impl Transport for Ranks {
    fn slots(&self) -> usize {
        (self.size - 1).max(0) as usize
    }

    fn start(&self, link: Link) -> anyhow::Result<()> {
        let (tx, rx) = unbounded();
        let watch_tx = tx.clone();
        let watcher = Watcher::start(heartbeat_interval(self.heartbeat_timeout), move |e| {
            let _ = watch_tx.send(Cmd::Watch(e));
        })?;
        *self.beats.lock().unwrap() = Some(watcher.beats.clone());
        *self.tx.lock().unwrap() = Some(tx.clone());
        *ACTIVE.lock().unwrap() = Some(link.clone());
        let n = self.slots();
        let (lost, who) = (self.lost.clone(), self.who.clone());
        // Ranks that see this directory get large payloads as named segments in it.
        let dir = crate::shm::shm_dir();
        let shm = match crate::shm::Run::start_driver(&dir) {
            Ok(run) => Some(run),
            Err(e) => {
                tracing::debug!("mpi: no shared memory in {} ({}); payloads go in messages", dir.display(), e);
                None
            }
        };
        // With the host: a rank on this node also gets a lane (see `lane`), a page made here.
        let here = crate::engine::hostname();
        let shm_text = shm.as_ref().map(|r| format!("{}\n{}\n{}", r.dir.display(), r.prefix, here));
        let mut ranks: Vec<Rank> = (1..=n as i32).map(Rank::new).collect();
        if let Some(run) = &shm {
            for r in &mut ranks {
                let path = run.dir.join(page_name(&run.prefix, r.rank));
                match crate::protocol::Doorbell::create_file(&path) {
                    Ok(bell) => r.page = Some((bell, path)),
                    Err(e) => tracing::debug!("mpi: no lane page {} ({}): frames go in messages", path.display(), e),
                }
            }
        }
        *self.shm.lock().unwrap() = shm;
        let shared = Arc::new(Shared {
            comm: Mutex::new(Comm {
                link,
                ranks,
                sends: Vec::new(),
                graveyard: Vec::new(),
                inbox: Inbox::default(),
                lost,
                who,
                shm: shm_text,
                watcher,
                starting: true,
                ending: None,
                frames: 0,
                taken: [0; 2],
                direct: false,
                hosts_checked: false,
            }),
            rx,
            alarm: Alarm::new(),
            mode: std::sync::atomic::AtomicU8::new(Mode::Polling as u8),
            helped: std::sync::atomic::AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let _ = self.comm.set(shared.clone());
        let s = shared.clone();
        let (ended, ended_rx) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new().name("taps-mpi-comm".into()).spawn(move || {
            let _ended = ended;
            run(s)
        })?;
        *self.thread.lock().unwrap() = Some((thread, ended_rx));
        *self.helping.lock().unwrap() = Some(spin::register(Arc::new(Helping { shared })));
        Ok(())
    }

    /// Sends the frame on this thread if the communication state is free (after the commands
    /// queued before it), else through the communication thread.
    fn send(&self, slot: usize, frame: Frame) {
        let rank = slot as i32 + 1;
        let Some(sh) = self.comm.get().filter(|s| !s.closed.load(Ordering::Acquire)) else {
            return self.cmd(Cmd::Send(rank, frame));
        };
        let Some(mut c) = sh.try_lock().filter(|c| c.direct) else { return self.cmd(Cmd::Send(rank, frame)) };
        c.drain(&sh.rx);
        c.command(Cmd::Send(rank, frame));
        // Its answer must be seen: by a waiting thread, or by the communication thread.
        let mode = sh.mode.load(Ordering::Acquire);
        let wake = mode == Mode::Asleep as u8 || (mode == Mode::Napping as u8 && !spin::helpers_polling());
        if wake {
            sh.set_mode(Mode::Polling);
            drop(c);
            sh.alarm.ring();
        }
    }

    fn describe(&self, slot: usize) -> String {
        match &self.who.lock().unwrap().get(slot).cloned().flatten() {
            Some((pid, host)) => format!("MPI rank {} (pid {} on {})", slot + 1, pid, host),
            None => format!("MPI rank {}", slot + 1),
        }
    }

    fn heard(&self, slot: usize) -> Option<Instant> {
        self.beats.lock().unwrap().as_ref()?.last(slot as i32 + 1)
    }

    fn kill(&self, slot: usize) -> bool {
        // A silent rank cannot be killed from here: only ending the job (MPI_Abort) stops it.
        HUNG.store(true, Ordering::SeqCst);
        self.cmd(Cmd::Forget(slot as i32 + 1));
        false
    }

    fn stop(&self, cancel: bool, _alive: &[bool]) {
        ACTIVE.lock().unwrap().take();
        // No waiting thread polls MPI from now on, and no sender sends itself.
        if let Some(sh) = self.comm.get() {
            sh.closed.store(true, Ordering::Release);
        }
        drop(self.helping.lock().unwrap().take());
        if let Some(tx) = self.tx.lock().unwrap().take() {
            let _ = tx.send(Cmd::Shutdown(cancel));
        }
        if let Some((t, ended)) = self.thread.lock().unwrap().take() {
            // The thread ends within its own deadlines, unless an MPI call blocks: OpenMPI's
            // progress, seeing a peer lost over TCP, reports it through mpirun and waits, which
            // may be stopping the job (SIGKILL follows SIGTERM by a second). The records must
            // not wait for it: the job is then ended (MPI_Abort) once they are written.
            let limit = if cancel { CANCEL_TIMEOUT } else { SHUTDOWN_TIMEOUT } + STOP_GRACE;
            match ended.recv_timeout(limit) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    tracing::warn!(
                        "mpi: rank 0's communication thread is stuck in an MPI call after {} ms; \
                         ending without it",
                        limit.as_millis()
                    );
                    LEFT_RUNNING.store(true, Ordering::SeqCst);
                }
                _ => {
                    let _ = t.join();
                }
            }
        }
        // Whatever named segment of the run is left (results of lost ranks, an interrupted run).
        if let Some(run) = self.shm.lock().unwrap().take() {
            run.cleanup();
        }
        crate::shm::drop_idle();
    }
}

/// Each worker rank's pid and host, by slot.
type Who = Arc<Mutex<Vec<Option<(u32, String)>>>>;

enum Cmd {
    Send(i32, Frame),
    Forget(i32),
    Watch(Event),
    Shutdown(bool),
}

struct Rank {
    rank: i32,
    /// Ready, and (once it is watched or [`WATCH_GRACE`] has passed) reported to the core.
    ready: Option<Instant>,
    reported: bool,
    alive: bool,
    watched: bool,
    /// Its liveness connection closed (it took `Shutdown`, or died).
    closed: bool,
    pid: u32,
    host: String,
    /// Tasks sent and not yet answered.
    outstanding: usize,
    /// Since when it has had nothing to do (its last answer, or `Ready`).
    idle_since: Option<Instant>,
    /// It sees the run's shared-memory directory (large payloads go by name).
    shares: bool,
    /// Its lane page, until it answers whether it mapped it (the file's name is then removed).
    page: Option<(crate::protocol::Doorbell, std::path::PathBuf)>,
    /// It runs on this node and mapped its page: every frame goes through the lane.
    lane: Option<Lane>,
}

impl Rank {
    fn new(rank: i32) -> Rank {
        Rank {
            rank,
            ready: None,
            reported: false,
            alive: true,
            watched: false,
            closed: false,
            pid: 0,
            host: String::new(),
            outstanding: 0,
            idle_since: None,
            shares: false,
            page: None,
            lane: None,
        }
    }

    fn describe(&self) -> String {
        if self.ready.is_some() {
            format!("MPI rank {} (pid {} on {})", self.rank, self.pid, self.host)
        } else {
            format!("MPI rank {}", self.rank)
        }
    }

    fn slot(&self) -> usize {
        (self.rank - 1) as usize
    }
}

struct Comm {
    link: Link,
    ranks: Vec<Rank>,
    sends: Vec<Sending>,
    /// Sends to lost ranks: never completed, never freed (MPI may still read them).
    graveyard: Vec<Sending>,
    inbox: Inbox,
    lost: Arc<Mutex<Vec<String>>>,
    who: Who,
    /// The run's shared-memory directory, prefix and rank 0's host, for the ranks
    /// (`DIR\nPREFIX\nHOST`).
    shm: Option<String>,
    watcher: Watcher,
    /// Some rank is still starting.
    starting: bool,
    /// `Shutdown` came (cancelled or not): the communication thread ends the run.
    ending: Option<bool>,
    /// Frames received so far.
    frames: u64,
    /// Of those, taken by the communication thread and by waiting threads.
    taken: [u64; 2],
    /// Other threads may make MPI calls (send directly, poll as helpers): every rank is ready,
    /// none was lost, and all run on this node. A lost peer over TCP makes OpenMPI's progress
    /// block in the call that sees it (it reports the loss through mpirun, which may be
    /// stopping the job): that call must not be one of the app's threads, which must record
    /// every task.
    direct: bool,
    /// Whether `direct` was decided (once every rank was ready).
    hosts_checked: bool,
}

// SAFETY: the MPI handles inside (requests) are used only under `Shared::comm`'s lock, one
// thread at a time, which `MPI_THREAD_SERIALIZED` allows; the rest is plain owned data.
unsafe impl Send for Comm {}

/// The communication thread: starts the ranks, then polls MPI whenever no waiting thread does,
/// until `Shutdown`.
fn run(sh: Arc<Shared>) {
    super::transport::precise_sleeps();
    {
        let mut c = sh.lock();
        for r in 0..c.ranks.len() {
            c.link.started(r, 0);
        }
        let address = c.watcher.address.clone();
        if let Err(e) = c.hello(&address) {
            c.link.broke(format!("MPI communication failed: {}", e));
        }
    }
    let mut idle_since: Option<Instant> = None;
    let mut spins = 0u32;
    let mut helped = sh.helped.load(Ordering::Relaxed);
    loop {
        let (progress, transfer, direct) = {
            let mut c = sh.lock();
            let progress = c.step(&sh.rx, false);
            if let Some(cancel) = c.ending {
                return c.finish(cancel, &sh.rx);
            }
            (progress, c.transfer(), c.direct)
        };
        if progress {
            idle_since = None;
            continue;
        }
        // Threads waiting for results poll MPI themselves: look now and then, and when the last
        // of them stops (it wakes this thread).
        let now_helped = sh.helped.load(Ordering::Relaxed);
        if direct && (spin::helpers_polling() || now_helped != helped) {
            helped = now_helped;
            idle_since = None;
            if let Ok(Some(c)) = sh.alarm.wait(&sh.rx, Some(HELPED_CHECK)) {
                sh.lock().command(c);
            }
            continue;
        }
        let idle = idle_since.get_or_insert_with(Instant::now).elapsed();
        // A message under way moves only while both sides poll: spin through transfers
        // (for a while: a rank busy with a long task takes its next input only afterwards).
        if idle < SPIN || (transfer && idle < TRANSFER_SPIN) {
            // Give the app and the engine's threads of this process a turn now and then.
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(YIELD_EVERY) {
                std::thread::yield_now();
            }
            continue;
        }
        // A thread that sends directly looks at the mode under the lock: set it under the lock,
        // after a last look at whether anything is outstanding.
        let got = {
            let c = sh.lock();
            let asleep = !c.active();
            sh.set_mode(if asleep { Mode::Asleep } else { Mode::Napping });
            drop(c);
            // Sleep an eighth of the time spent waiting so far, at most MAX_PAUSE.
            sh.alarm.wait(&sh.rx, (!asleep).then(|| (idle / 8).min(MAX_PAUSE)))
        };
        let mut c = sh.lock();
        sh.set_mode(Mode::Polling);
        match got {
            Ok(cmd) => {
                idle_since = None;
                if let Some(cmd) = cmd {
                    c.command(cmd);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => c.ending = Some(true),
        }
        if let Some(cancel) = c.ending {
            return c.finish(cancel, &sh.rx);
        }
    }
}

impl Comm {
    /// Takes the commands waiting, polls MPI (handling what arrived), reports ready ranks;
    /// whether anything happened.
    fn step(&mut self, rx: &Receiver<Cmd>, waiting: bool) -> bool {
        let mut progress = self.drain(rx);
        let before = self.frames;
        match self.poll_mpi() {
            Ok(p) => progress |= p,
            Err(e) => self.link.broke(format!("MPI communication failed: {}", e)),
        }
        self.taken[usize::from(waiting)] += self.frames - before;
        if progress {
            // What the answers made the core send while this thread held the lock.
            self.drain(rx);
        }
        self.starting = self.report_ready();
        progress
    }

    /// Handles the commands waiting in `rx` (up to a `Shutdown`, which is noted); whether there
    /// were any.
    fn drain(&mut self, rx: &Receiver<Cmd>) -> bool {
        let mut any = false;
        while self.ending.is_none() {
            match rx.try_recv() {
                Ok(c) => {
                    any = true;
                    self.command(c);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.ending = Some(true),
            }
        }
        any
    }

    /// Whether something is due: a rank starting, a message under way, a task unanswered.
    fn active(&self) -> bool {
        self.starting || self.transfer() || self.ranks.iter().any(|r| r.alive && r.outstanding > 0)
    }

    /// Whether a message is under way (it moves only while both sides poll).
    fn transfer(&self) -> bool {
        !self.sends.is_empty()
            || self.inbox.busy()
            || self.ranks.iter().any(|r| r.lane.as_ref().is_some_and(|l| l.expecting() || l.backlogged()))
    }

    /// Whether MPI must be polled: a rank starting or not on a lane, a message under way (or
    /// announced in a lane). Else every frame comes through the lanes.
    fn mpi_due(&self) -> bool {
        self.starting
            || !self.sends.is_empty()
            || self.inbox.busy()
            || self.ranks.iter().any(|r| r.alive && r.lane.as_ref().is_none_or(|l| l.expecting()))
    }

    /// Sends every worker the liveness address and `Hello`.
    fn hello(&mut self, address: &str) -> Result<(), String> {
        for r in &self.ranks {
            if let Some(text) = &self.shm {
                self.sends.push(send_text(r.rank, TAG_SHM, text)?);
            }
            self.sends.push(send_text(r.rank, TAG_WATCH, address)?);
            self.sends.push(send_frame(r.rank, self.link.hello(format!("rank-{}", r.rank)))?);
        }
        Ok(())
    }

    /// Reports ranks that are ready and watched (or whose liveness connection did not come
    /// within [`WATCH_GRACE`]) to the core; whether some rank is still starting.
    fn report_ready(&mut self) -> bool {
        let mut starting = false;
        for r in &mut self.ranks {
            if r.reported || !r.alive {
                continue;
            }
            match r.ready {
                Some(at) if r.watched || at.elapsed() >= WATCH_GRACE => {
                    if !r.watched {
                        tracing::warn!(
                            "mpi: {} has no liveness connection to rank 0 (see its stderr); if it dies, its task \
                             will not be recorded until the run is stopped",
                            r.describe()
                        );
                    }
                    r.reported = true;
                    self.who.lock().unwrap()[r.slot()] = Some((r.pid, r.host.clone()));
                    self.link.ready(r.slot(), 0, format!("rank-{}", r.rank));
                }
                _ => starting = true,
            }
        }
        if !starting && !self.hosts_checked {
            // Once, when every rank is ready (a rank lost before that keeps `direct` off).
            self.hosts_checked = true;
            let here = crate::engine::hostname();
            self.direct = self.ranks.iter().all(|r| r.reported && r.alive && r.host == here);
        }
        starting
    }

    fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Send(rank, frame) => {
                let Some(r) = self.rank_mut(rank).filter(|r| r.alive) else { return };
                r.outstanding += 1;
                let dozing = r.idle_since.take().is_some_and(|at| at.elapsed() >= RING_AFTER);
                if r.lane.is_some() {
                    // The lane's ring wakes the rank if it sleeps on the page.
                    return self.send_on_lane(rank, TAG_FRAME, frame);
                }
                match send_frame_shared(rank, frame, r.shares) {
                    Ok(mut s) => {
                        // A small frame usually leaves at once (eager): then nothing is kept.
                        match s.test() {
                            Ok(true) => {}
                            Ok(false) => self.sends.push(s),
                            Err(e) => return self.lose(rank, format!("cannot be reached ({})", e)),
                        }
                        if dozing {
                            self.watcher.ring(rank);
                        }
                    }
                    Err(e) => self.lose(rank, format!("cannot be reached ({})", e)),
                }
            }
            // The rank's answer is on its way: the poll that follows takes it.
            Cmd::Watch(Event::Wake(_)) => {}
            Cmd::Forget(rank) => self.forget(rank),
            Cmd::Watch(Event::Connected(r)) => {
                if let Some(rk) = self.rank_mut(r) {
                    rk.watched = true;
                }
            }
            Cmd::Watch(Event::Closed(r)) => {
                if let Some(rk) = self.rank_mut(r) {
                    rk.closed = true;
                }
                self.lose(r, "died".into());
            }
            Cmd::Shutdown(cancel) => self.ending = Some(cancel),
        }
    }

    fn rank_mut(&mut self, r: i32) -> Option<&mut Rank> {
        self.ranks.get_mut(usize::try_from(r - 1).ok()?)
    }

    /// Receives what has arrived, handles complete frames, retires finished sends.
    fn poll_mpi(&mut self) -> Result<bool, String> {
        let mut progress = false;
        if self.mpi_due() {
            progress |= self.inbox.poll(None)?;
        }
        while let Some((src, tag, frame)) = self.inbox.take_frame()? {
            progress = true;
            self.received(src, tag, frame);
        }
        for i in 0..self.ranks.len() {
            let rank = self.ranks[i].rank;
            let shares = self.ranks[i].shares;
            // Until the rank is lost (a message that loses it drops its lane).
            while let Some(lane) = self.ranks[i].lane.as_mut() {
                let started = match lane.flush(rank, shares) {
                    Ok(s) => s,
                    Err(e) => {
                        self.lose(rank, format!("cannot be reached ({})", e));
                        break;
                    }
                };
                self.sends.extend(started);
                match lane.next(rank, &mut self.inbox) {
                    Ok(Some((tag, frame))) => {
                        progress = true;
                        self.received(rank, tag, frame);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.lose(rank, format!("sent a malformed message ({})", e));
                        break;
                    }
                }
            }
        }
        let mut failed = Vec::new();
        self.sends.retain_mut(|s| match s.test() {
            Ok(done) => !done,
            Err(e) => {
                failed.push((s.dest, e));
                true
            }
        });
        for (dest, e) in failed {
            self.lose(dest, format!("cannot be reached ({})", e));
        }
        Ok(progress)
    }

    /// Handles a frame (or text message) from rank `src`.
    fn received(&mut self, src: i32, tag: std::os::raw::c_int, frame: Frame) {
        self.frames += 1;
        if tag == TAG_SHM {
            return self.shm_answer(src, &frame.header);
        }
        match FromWorker::decode(frame) {
            Ok(m) => self.message(src, m),
            Err(e) => self.lose(src, format!("sent a malformed message ({})", e)),
        }
    }

    /// A rank's answer to the shared-memory handshake: `0` (it does not see the directory),
    /// `1` (it does: large payloads go by name), `2` (it also mapped its lane page).
    fn shm_answer(&mut self, src: i32, answer: &[u8]) {
        let Some(r) = self.rank_mut(src) else { return };
        r.shares = answer == b"1" || answer == b"2";
        let page = r.page.take();
        if let Some((_, path)) = &page {
            let _ = std::fs::remove_file(path);
        }
        if r.shares {
            tracing::debug!("mpi: rank {} takes large payloads through shared memory", src);
        }
        if answer == b"2"
            && let Some((bell, _)) = page
        {
            r.lane = Some(Lane::driver(bell));
            self.inbox.announced_only(src);
            tracing::debug!("mpi: rank {} is on this node: frames go through a shared-memory lane", src);
        }
    }

    /// Sends a message to a rank on a lane ([`Lane::send`]); a failed send loses the rank.
    fn send_on_lane(&mut self, rank: i32, tag: std::os::raw::c_int, frame: Frame) {
        let Some(r) = self.rank_mut(rank) else { return };
        let shares = r.shares;
        let Some(lane) = r.lane.as_mut() else { return };
        match lane.send(rank, tag, frame, shares) {
            Ok(Some(s)) => self.sends.push(s),
            Ok(None) => {}
            Err(e) => self.lose(rank, format!("cannot be reached ({})", e)),
        }
    }

    fn message(&mut self, src: i32, m: FromWorker) {
        let Some(rk) = self.rank_mut(src).filter(|r| r.alive) else {
            tracing::warn!("mpi: message from unexpected rank {}", src);
            return;
        };
        match m {
            FromWorker::Ready { pid, hostname } => {
                rk.ready = Some(Instant::now());
                rk.idle_since = rk.ready;
                rk.pid = pid;
                rk.host = hostname;
            }
            FromWorker::Failed { message } => self.lose(src, format!("failed: {}", message)),
            FromWorker::Done { seq, outcome, execution } => {
                rk.outstanding = rk.outstanding.saturating_sub(1);
                if rk.outstanding == 0 {
                    rk.idle_since = Some(Instant::now());
                }
                let slot = rk.slot();
                self.link.done(slot, 0, seq, outcome, execution);
            }
        }
    }

    /// A rank is gone: the core fails its running task and re-queues the rest.
    fn lose(&mut self, r: i32, why: String) {
        let Some(rk) = self.rank_mut(r).filter(|r| r.alive) else { return };
        let (slot, msg) = (rk.slot(), format!("{} {}", rk.describe(), why));
        self.forget(r);
        self.link.lost(slot, 0, msg);
    }

    /// Stops talking to rank `r`: what it was sent or sending is abandoned.
    fn forget(&mut self, r: i32) {
        // From now on only the communication thread makes MPI calls (see `direct`).
        self.direct = false;
        let Some(rk) = self.rank_mut(r) else { return };
        rk.alive = false;
        rk.outstanding = 0;
        rk.lane = None;
        self.inbox.drop_source(r);
        let (dead, live): (Vec<Sending>, Vec<Sending>) = self.sends.drain(..).partition(|s| s.dest == r);
        self.sends = live;
        self.graveyard.extend(dead);
    }

    /// Tells every live rank to exit and waits until each has taken it (closed its liveness
    /// connection): up to [`SHUTDOWN_TIMEOUT`], or [`CANCEL_TIMEOUT`] when cancelled.
    fn shutdown(&mut self, cancel: bool, rx: &Receiver<Cmd>) {
        let lost = !self.lost.lock().unwrap().is_empty();
        for i in 0..self.ranks.len() {
            let r = &self.ranks[i];
            if !r.alive {
                continue;
            }
            let rank = r.rank;
            if r.lane.is_some() {
                if lost {
                    self.send_on_lane(rank, TAG_LOST, Frame { header: Vec::new(), segments: Vec::new() });
                }
                self.send_on_lane(rank, TAG_FRAME, ToWorker::Shutdown.encode());
                continue;
            }
            if lost && let Ok(s) = send_text(rank, TAG_LOST, "") {
                self.sends.push(s);
            }
            if let Ok(s) = send_frame(rank, ToWorker::Shutdown.encode()) {
                self.sends.push(s);
            }
        }
        // Every rank closes its liveness connection once it has taken its `Shutdown`. When
        // cancelled, tasks still running were recorded by the engine; they are not awaited.
        let deadline = Instant::now() + if cancel { CANCEL_TIMEOUT } else { SHUTDOWN_TIMEOUT };
        loop {
            let told = self.ranks.iter().all(|r| !r.alive || !r.watched || r.closed);
            let sent =
                self.sends.is_empty() && !self.ranks.iter().any(|r| r.lane.as_ref().is_some_and(|l| l.backlogged()));
            if (cancel || sent) && told {
                if self.ranks.iter().any(|r| r.alive && !r.watched) {
                    LEFT_RUNNING.store(true, Ordering::SeqCst);
                }
                return;
            }
            if Instant::now() >= deadline {
                LEFT_RUNNING.store(true, Ordering::SeqCst);
                if cancel {
                    return;
                }
                let waiting: Vec<String> =
                    self.ranks.iter().filter(|r| r.alive && r.watched && !r.closed).map(|r| r.describe()).collect();
                tracing::warn!(
                    "mpi: {} did not take Shutdown within {} s",
                    if waiting.is_empty() { "a send".to_string() } else { waiting.join(", ") },
                    SHUTDOWN_TIMEOUT.as_secs()
                );
                return;
            }
            let _ = self.poll_mpi();
            while let Ok(c) = rx.try_recv() {
                if let Cmd::Watch(Event::Closed(r)) = c
                    && let Some(rk) = self.rank_mut(r)
                {
                    rk.closed = true;
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn finish(&mut self, cancel: bool, rx: &Receiver<Cmd>) {
        tracing::debug!(
            "mpi: frames from the ranks taken by the communication thread: {}, by threads waiting for results: {}",
            self.taken[0],
            self.taken[1]
        );
        let lanes = self.ranks.iter().filter_map(|r| r.lane.as_ref());
        let (ring, mpi, waited) = lanes.fold((0, 0, 0), |(a, b, c), l| (a + l.taken[0], b + l.taken[1], c + l.waited));
        tracing::debug!(
            "mpi: frames from ranks on lanes: {} through the rings, {} as announced MPI messages; ranks on lanes: {}; \
             frames to them that waited for room in a ring: {}",
            ring,
            mpi,
            self.ranks.iter().filter(|r| r.lane.is_some()).count(),
            waited
        );
        self.shutdown(cancel, rx);
        self.watcher.stop();
        // Requests still pending (cancelled runs, lost ranks) keep their buffers until exit.
        std::mem::forget(std::mem::take(&mut self.sends));
        std::mem::forget(std::mem::take(&mut self.graveyard));
        std::mem::forget(std::mem::take(&mut self.inbox));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run that never ended: a thread rang the sleeping communication thread, and the next
    /// direct send, draining the commands under the lock, took the wake-up before it did.
    #[test]
    fn a_wake_up_reaches_the_waiting_thread_even_when_another_thread_drains_the_commands() {
        let (tx, rx) = unbounded::<u32>();
        let alarm = Arc::new(Alarm::new());
        for round in 0..200 {
            let (a, r) = (alarm.clone(), rx.clone());
            let (got_tx, got) = bounded(1);
            let waiter = std::thread::spawn(move || {
                let _ = got_tx.send(a.wait(&r, None));
            });
            // Sometimes before the waiter waits, sometimes after.
            if round % 2 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            alarm.ring();
            // What a direct send does under the lock right after: takes every command waiting.
            tx.send(round).unwrap();
            let drained: Vec<u32> = rx.try_iter().collect();
            match got.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(None)) => assert_eq!(drained, vec![round]),
                // The waiter may take the command first; then the wake-up is still there.
                Ok(Ok(Some(c))) => {
                    assert_eq!((c, drained.len()), (round, 0));
                    assert!(matches!(alarm.wait(&rx, Some(Duration::ZERO)), Ok(None)), "the wake-up stays");
                }
                other => panic!("round {}: the waiting thread did not wake: {:?}", round, other.map(|r| r.is_ok())),
            }
            waiter.join().unwrap();
        }
    }

    #[test]
    fn wake_ups_before_a_wait_count_once_and_a_wait_ends_on_a_command_a_timeout_or_the_end() {
        let (tx, rx) = unbounded::<u32>();
        let alarm = Alarm::new();
        alarm.ring();
        alarm.ring();
        assert!(matches!(alarm.wait(&rx, Some(Duration::from_millis(1))), Ok(None)));
        assert!(matches!(alarm.wait(&rx, Some(Duration::from_millis(1))), Err(RecvTimeoutError::Timeout)));
        tx.send(7).unwrap();
        assert!(matches!(alarm.wait(&rx, None), Ok(Some(7))));
        drop(tx);
        assert!(matches!(alarm.wait(&rx, None), Err(RecvTimeoutError::Disconnected)));
    }
}
