//! What a machine allows a run, and the check that refuses, before anything is created, a
//! configuration that provably cannot run within it: memory the app needs at least (its own
//! lower-bound estimate, see [`crate::app::Footprint`]) above what is available, or more worker
//! processes or threads than the system can start. Oversubscription (more workers than cores)
//! stays allowed.
//!
//! `taps run` checks against [`Limits::here`]; `taps submit` builds a [`Limits`] from the
//! partition's nodes and calls the same [`check_limits`].

use crate::config::Config;
use crate::executor::WorkerKind;

/// One limit: its value and where it comes from (for the error message).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Limit {
    /// The value (bytes, processes or threads).
    pub value: u64,
    /// Its origin, e.g. `MemAvailable in /proc/meminfo`, `kernel.pid_max`, `the partition's nodes`.
    pub source: String,
}

impl Limit {
    /// A limit of `value` from `source`.
    pub fn new(value: u64, source: impl Into<String>) -> Self {
        Limit { value, source: source.into() }
    }
}

/// What a run may use; `None` = unknown (not checked).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Limits {
    /// Where the run executes, for messages: `this machine`, `a node of partition debug`.
    pub place: String,
    /// Memory available to the run, in bytes.
    pub memory_bytes: Option<Limit>,
    /// Processes the run may start.
    pub max_processes: Option<Limit>,
    /// Threads one process may start.
    pub max_threads: Option<Limit>,
}

impl Limits {
    /// The limits of this machine for this process: available memory (`MemAvailable`, the
    /// cgroup's `memory.max`, `RLIMIT_AS`/`RLIMIT_DATA`, the lowest), processes and threads
    /// (`kernel.threads-max`, `kernel.pid_max`, the cgroup's `pids.max`, `RLIMIT_NPROC` unless
    /// root, the lowest).
    pub fn here() -> Limits {
        let mut memory = Vec::new();
        if let Some(kb) = meminfo("MemAvailable:") {
            memory.push(Limit::new(kb.saturating_mul(1024), "MemAvailable in /proc/meminfo"));
        }
        let cgroup = cgroup_dir();
        if let Some(dir) = &cgroup
            && let Some(max) = read_u64(&dir.join("memory.max"))
        {
            let used = read_u64(&dir.join("memory.current")).unwrap_or(0);
            memory.push(Limit::new(max.saturating_sub(used), "the cgroup's memory.max"));
        }
        memory.extend(rlimit(libc::RLIMIT_AS, "RLIMIT_AS (ulimit -v)"));
        memory.extend(rlimit(libc::RLIMIT_DATA, "RLIMIT_DATA (ulimit -d)"));
        let mut tasks = Vec::new();
        for (file, name) in
            [("/proc/sys/kernel/threads-max", "kernel.threads-max"), ("/proc/sys/kernel/pid_max", "kernel.pid_max")]
        {
            if let Some(v) = read_u64(std::path::Path::new(file)) {
                tasks.push(Limit::new(v, name));
            }
        }
        if let Some(dir) = &cgroup
            && let Some(v) = read_u64(&dir.join("pids.max"))
        {
            tasks.push(Limit::new(v, "the cgroup's pids.max"));
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            tasks.extend(rlimit(libc::RLIMIT_NPROC, "RLIMIT_NPROC (ulimit -u)"));
        }
        let lowest = |v: Vec<Limit>| v.into_iter().min_by_key(|l| l.value);
        let tasks = lowest(tasks);
        Limits {
            place: "this machine".into(),
            memory_bytes: lowest(memory),
            max_processes: tasks.clone(),
            max_threads: tasks,
        }
    }
}

fn read_u64(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.trim().trim_end_matches("kB").trim().parse().ok())
}

/// This process's cgroup v2 directory.
fn cgroup_dir() -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(std::path::Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/')))
}

fn rlimit(resource: libc::__rlimit_resource_t, name: &str) -> Option<Limit> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(Limit::new(r.rlim_cur, name))
}

/// Private memory of one `taps-worker` process, at least (measured: 2.5 MiB dirty).
const WORKER_PROCESS_BYTES: u64 = 1 << 20;

/// Bytes in binary units, e.g. `1.5 GiB`.
pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{} B", b) } else { format!("{:.1} {}", v, UNITS[u]) }
}

/// Refuses a configuration that provably cannot run within `limits`: the app's memory need (a
/// lower bound) above the memory available, or the executor's worker processes or threads
/// above what the system can start. The error is one line naming the need and the limit.
pub(crate) fn check_limits(cfg: &Config, limits: &Limits) -> Result<(), String> {
    let workers = cfg.executor.options.workers().map(|w| match w.kind {
        WorkerKind::Processes => (w.key, w.count, "processes", &limits.max_processes),
        WorkerKind::Threads => (w.key, w.count, "threads", &limits.max_threads),
    });
    if let Some((key, n, what, Some(limit))) = workers
        && n > limit.value
    {
        return Err(format!(
            "engine.executor.{} = {} is more {} than {} can start ({} = {}); oversubscribing the cores is fine, but not this",
            key, n, what, limits.place, limit.source, limit.value
        ));
    }
    let mut need = cfg.app.options.footprint();
    if let Some((_, n, "processes", _)) = workers {
        need.memory_bytes = need.memory_bytes.saturating_add(n.saturating_mul(WORKER_PROCESS_BYTES));
        need.memory_for.push_str(&format!(
            "{}engine.executor.max_processes = {} worker processes of at least {} each",
            if need.memory_for.is_empty() { "" } else { " and " },
            n,
            human_bytes(WORKER_PROCESS_BYTES)
        ));
    }
    if let Some(mem) = &limits.memory_bytes
        && need.memory_bytes > mem.value
    {
        return Err(format!(
            "app {} needs at least {} of memory for {}, but {} has {} available ({})",
            cfg.app.name,
            human_bytes(need.memory_bytes),
            need.memory_for,
            limits.place,
            human_bytes(mem.value),
            mem.source
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_limits() {
        let l = Limits::here();
        assert!(l.memory_bytes.as_ref().is_some_and(|m| m.value > 0), "{:?}", l);
        assert!(l.max_processes.as_ref().is_some_and(|m| m.value > 1), "{:?}", l);
    }

    fn config(args: &[&str]) -> Config {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        crate::config::load(&crate::config::parse_args(&args).unwrap()).unwrap()
    }

    /// A partition's limits, as `taps submit` builds them.
    fn node(memory: u64, tasks: u64) -> Limits {
        Limits {
            place: "a node of partition debug".into(),
            memory_bytes: Some(Limit::new(memory, "sinfo")),
            max_processes: Some(Limit::new(tasks, "sinfo")),
            max_threads: None,
        }
    }

    #[test]
    fn needs_are_checked_against_given_limits() {
        let chol = config(&["--app", "cholesky", "--app.matrix-size", "1000", "--app.block-size", "100"]);
        // 16 MB needed at least: fits 1 GiB, not 1 MiB.
        assert!(check_limits(&chol, &node(1 << 30, 64)).is_ok());
        let e = check_limits(&chol, &node(1 << 20, 64)).unwrap_err();
        assert!(e.starts_with("app cholesky needs at least 15.3 MiB of memory"), "{}", e);
        assert!(e.contains("a node of partition debug has 1.0 MiB available (sinfo)"), "{}", e);
        let pool = |n: &str| {
            let base = ["--app", "synthetic", "--app.structure", "reduce", "--app.task-count", "2"];
            config(&[&base[..], &["--engine.executor.max-processes", n]].concat())
        };
        assert!(check_limits(&pool("64"), &node(1 << 30, 64)).is_ok());
        let e = check_limits(&pool("65"), &node(1 << 30, 64)).unwrap_err();
        assert!(e.contains("max_processes = 65") && e.contains("(sinfo = 64)"), "{}", e);
        // Each worker process takes memory too.
        let e = check_limits(&pool("60"), &node(50 << 20, 64)).unwrap_err();
        assert!(e.contains("engine.executor.max_processes = 60 worker processes of at least 1.0 MiB each"), "{}", e);
        // Unknown limits are not checked.
        assert!(check_limits(&pool("100000"), &Limits::default()).is_ok());
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
