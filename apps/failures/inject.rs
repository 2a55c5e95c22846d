//! The worker side of failure injection: what a picked task does instead of its own work.
//!
//! Every function here returns the [`TaskError`] the task fails with, except the ones that end a
//! process (`worker-killed` and `node-killed` in a worker process), which do not return.
//! Processes are signalled only when they provably belong to this run: the taps driver named in
//! the [`Injection`], or `taps-worker` processes that are its children.

use std::ffi::{CStr, CString};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::FailureType;
use crate::task::TaskError;

/// What the driver tells a wrapped task: which failure, whether it fires, its limits, and who
/// the driver is (so that only this run's processes are ever signalled).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Injection {
    /// The failure (never `random` or `dependency`: the driver resolves those).
    pub kind: FailureType,
    /// Whether the draw picked this task.
    pub fire: bool,
    /// Which submission of the run this is (1, 2, ...; in the record's traceback).
    pub number: u64,
    /// The taps driver's process id.
    pub driver_pid: u32,
    /// The taps driver's host.
    pub driver_host: String,
    /// The driver process's random token: equal to [`process_token`] only inside the driver.
    pub driver_token: u64,
    /// `timeout`: seconds the task runs before it is failed.
    pub timeout_seconds: f64,
    /// `memory`: bytes allocated before the task is failed.
    pub memory_limit: u64,
    /// `ulimit`: descriptors the task may open beyond those already open.
    pub ulimit_files: u64,
    /// `manager-killed`: created by the first task that signals the driver (once per run).
    pub marker: std::path::PathBuf,
}

/// A random number drawn once per process: tells the driver process from worker processes.
pub(crate) fn process_token() -> u64 {
    static TOKEN: OnceLock<u64> = OnceLock::new();
    *TOKEN.get_or_init(rand::random)
}

impl Injection {
    /// Whether this task runs inside the taps driver (an in-process executor such as thread-pool).
    pub(crate) fn in_driver(&self) -> bool {
        self.driver_token == process_token()
    }
}

/// The message the Python suite uses for raised failures.
pub(crate) const MESSAGE: &str = "Failure injection error.";

/// Runs the failure `spec.kind`; returns the error the task fails with.
pub(crate) fn fire(spec: &Injection) -> TaskError {
    let mut e = match spec.kind {
        FailureType::Exception => injected("Exception", MESSAGE.into()),
        FailureType::ZeroDivision => zero_division(),
        FailureType::Panic => panic!("{}", MESSAGE),
        FailureType::Import => import(),
        FailureType::Timeout => timeout(spec.timeout_seconds),
        FailureType::Memory => memory(spec.memory_limit),
        FailureType::Ulimit => ulimit(spec.ulimit_files),
        FailureType::WorkerKilled => worker_killed(spec),
        FailureType::ManagerKilled => manager_killed(spec),
        FailureType::NodeKilled => node_killed(spec),
        FailureType::Dependency | FailureType::Random => TaskError::exception(
            "InjectionError",
            format!("failure type {} is resolved by the driver and cannot fire in a task", spec.kind),
        ),
    };
    e.traceback = format!("injected by the failures app: {} failure, submission #{}", spec.kind, spec.number);
    e
}

fn injected(kind: &str, message: String) -> TaskError {
    TaskError::exception(kind, message)
}

/// An integer division by zero, caught.
fn zero_division() -> TaskError {
    let zero = std::hint::black_box(0u64);
    match 1u64.checked_div(zero) {
        None => injected("ZeroDivisionError", format!("{} (integer division by zero)", MESSAGE)),
        Some(_) => unreachable!("division by zero succeeded"),
    }
}

/// A shared library no system has: loading it fails like a missing compiled module.
pub(crate) const MISSING_LIBRARY: &str = "libtaps-injected-missing-module.so";

fn import() -> TaskError {
    let name = CString::new(MISSING_LIBRARY).expect("no NUL in the name");
    // SAFETY: dlopen with a valid C string; the handle is closed if it (unexpectedly) loads.
    let why = unsafe {
        let h = libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if !h.is_null() {
            libc::dlclose(h);
            format!("{} loaded although it should not exist", MISSING_LIBRARY)
        } else {
            let e = libc::dlerror();
            if e.is_null() {
                format!("cannot load {}", MISSING_LIBRARY)
            } else {
                CStr::from_ptr(e).to_string_lossy().into()
            }
        }
    };
    injected("ImportError", format!("{} Cannot load a module: {}", MESSAGE, why))
}

fn timeout(seconds: f64) -> TaskError {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    // The task "hangs" until its deadline; the worker notices and fails it.
    while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
    injected("Timeout", format!("the task exceeded its deadline of {} s (app.timeout_seconds)", seconds))
}

/// `MemAvailable` and `MemTotal` of this host in bytes, if known.
fn meminfo() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    Some((field("MemAvailable:")?, field("MemTotal:")?))
}

/// Allocation step of the `memory` failure.
const MEMORY_CHUNK: u64 = 64 << 20;

fn memory(limit: u64) -> TaskError {
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut total: u64 = 0;
    let mut stopped_by_host = false;
    while total < limit {
        let n = MEMORY_CHUNK.min(limit - total);
        // Never push the host towards the OOM killer: keep half of its memory available,
        // whatever other tasks (or processes) allocate at the same time.
        if let Some((available, all)) = meminfo()
            && available.saturating_sub(n) < all / 2
        {
            stopped_by_host = true;
            break;
        }
        let mut v: Vec<u8> = Vec::new();
        if v.try_reserve_exact(n as usize).is_err() {
            stopped_by_host = true;
            break;
        }
        v.resize(n as usize, 0xA5); // touch every page
        std::hint::black_box(&v);
        total += n;
        held.push(v);
    }
    drop(held);
    let why = if stopped_by_host {
        format!("stopped before app.memory_limit ({} bytes) to keep half of the host's memory available", limit)
    } else {
        format!("out of memory at app.memory_limit ({} bytes)", limit)
    };
    injected("MemoryError", format!("allocated and touched {} bytes without completing; {}", total, why))
}

/// One `ulimit` failure at a time per process: the limit is process-wide.
static ULIMIT: Mutex<()> = Mutex::new(());

fn ulimit(extra: u64) -> TaskError {
    let _one = ULIMIT.lock().unwrap_or_else(|e| e.into_inner());
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) } != 0 {
        return injected("OSError", format!("getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error()));
    }
    let open_now = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0);
    let soft = old.rlim_cur.min(open_now + extra);
    let lowered = libc::rlimit { rlim_cur: soft, rlim_max: old.rlim_max };
    // SAFETY: lowering the soft limit is always allowed; it is restored below.
    let lowered_ok = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) } == 0;
    let mut files = Vec::new();
    let limit = if lowered_ok { soft } else { old.rlim_cur };
    let error = loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => files.push(f),
            Err(e) => break Some(e),
        }
        if files.len() as u64 > limit + 16 {
            break None;
        }
    };
    let opened = files.len();
    drop(files);
    if lowered_ok {
        // SAFETY: restores the limit read above (the hard limit was never changed).
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
    }
    match error {
        Some(e) => injected(
            "OSError",
            format!(
                "{} after opening {} files (RLIMIT_NOFILE soft limit {} for this injected failure, {} otherwise)",
                e, opened, limit, old.rlim_cur
            ),
        ),
        None => injected("OSError", format!("opened {} files without reaching the descriptor limit {}", opened, limit)),
    }
}

/// Sends `sig` to `pid`; the OS error if it fails.
fn signal(pid: u32, sig: libc::c_int) -> std::io::Result<()> {
    // SAFETY: plain syscall; callers only pass processes of this run.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Ends this process at once (never returns).
fn die() -> ! {
    let _ = signal(std::process::id(), libc::SIGKILL);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether this worker process is a child of the taps driver on the driver's host.
fn child_of_driver(spec: &Injection) -> Result<(), TaskError> {
    // SAFETY: plain syscall.
    let parent = unsafe { libc::getppid() } as u32;
    if parent == spec.driver_pid && crate::engine::hostname() == spec.driver_host {
        Ok(())
    } else {
        Err(injected(
            spec.kind.error_kind(),
            format!(
                "not injected: this worker's parent (pid {} on {}) is not the taps driver (pid {} on {}), and the \
                 failures app signals only processes of its own run",
                parent,
                crate::engine::hostname(),
                spec.driver_pid,
                spec.driver_host
            ),
        ))
    }
}

fn worker_killed(spec: &Injection) -> TaskError {
    if spec.in_driver() {
        return injected(
            "WorkerKilled",
            "simulated: this worker is a thread of the taps driver (in-process executor), and killing it would end \
             the whole run, so the task fails instead"
                .into(),
        );
    }
    die()
}

fn node_killed(spec: &Injection) -> TaskError {
    if spec.in_driver() {
        return injected(
            "NodeKilled",
            "simulated: the workers are threads of the taps driver (in-process executor), and killing them would \
             end the whole run, so the task fails instead"
                .into(),
        );
    }
    if let Err(e) = child_of_driver(spec) {
        return e;
    }
    for pid in sibling_workers(spec.driver_pid) {
        let _ = signal(pid, libc::SIGKILL);
    }
    die()
}

/// Processes that run the same executable as this one and are children of `parent`
/// (the other `taps-worker`s of this run on this host), this one excluded.
pub(crate) fn sibling_workers(parent: u32) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let me = std::process::id();
    let Ok(exe) = std::fs::metadata("/proc/self/exe") else { return Vec::new() };
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me || pid == parent {
            continue;
        }
        if parent_of(pid) != Some(parent) {
            continue;
        }
        let same_exe =
            std::fs::metadata(format!("/proc/{}/exe", pid)).is_ok_and(|m| m.dev() == exe.dev() && m.ino() == exe.ino());
        if same_exe {
            out.push(pid);
        }
    }
    out
}

/// The parent pid of `pid`, from `/proc/<pid>/stat`.
pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid)).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// How long a `manager-killed` task waits for the signalled driver to stop it.
pub(crate) const MANAGER_GRACE: Duration = Duration::from_secs(30);

fn manager_killed(spec: &Injection) -> TaskError {
    if !spec.in_driver()
        && let Err(e) = child_of_driver(spec)
    {
        return e;
    }
    let pid = spec.driver_pid;
    match once_per_run(&spec.marker) {
        Ok(true) => {
            if let Err(e) = signal(pid, libc::SIGTERM) {
                return injected("ManagerKilled", format!("cannot signal the taps driver (pid {}): {}", pid, e));
            }
        }
        Ok(false) => {} // another injected task already signalled it
        Err(e) => {
            return injected(
                "ManagerKilled",
                format!("not signalled: cannot create the marker {}: {}", spec.marker.display(), e),
            );
        }
    }
    // The process that owns this worker is going down, and this task's result with it: wait to
    // be stopped (the driver records the task as interrupted and stops its workers).
    let start = Instant::now();
    while start.elapsed() < MANAGER_GRACE {
        std::thread::sleep(Duration::from_millis(100));
    }
    injected(
        "ManagerKilled",
        format!(
            "sent SIGTERM to the taps driver (pid {}), but it was still running after {} s",
            pid,
            MANAGER_GRACE.as_secs()
        ),
    )
}

/// Creates `marker`; true if this call created it (a second SIGTERM would make taps exit at once,
/// without its records, so the driver is signalled only once per run).
fn once_per_run(marker: &Path) -> std::io::Result<bool> {
    use std::io::Write;
    match std::fs::OpenOptions::new().write(true).create_new(true).open(marker) {
        Ok(mut f) => {
            let _ = writeln!(f, "SIGTERM sent to the taps driver by process {}", std::process::id());
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}
