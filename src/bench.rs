//! `taps bench`: executor overhead, throughput and data movement, measured from `tasks.jsonl`
//! of real synthetic runs, every executor side by side in one invocation.
//!
//! * overhead: a bag with one task in flight; per task (received − submit) − (task end − task start);
//! * throughput: a bag of no-op tasks with `--in-flight` tasks in flight; tasks / (last received − first submit);
//! * data: a bag with one task in flight carrying `S` bytes in and `S` bytes out, inline and through
//!   the `file` transformer (and `redis` with `--redis ADDRESS`); effective rate = 2·S / (round trip − task body);
//! * Redis alone (with `--redis`): the redis rows' four transfers of `S` bytes from one client
//!   without taps (two `SET` + `GETDEL` pairs), the floor of what the transformer can reach;
//! * what the machine allows a process pool (with `process-pool` among the executors): the
//!   throughput run's requests between one thread and forked worker processes without taps,
//!   over Unix sockets and over shared memory ([`crate::floor`]);
//! * scale (optional): a bag of `--scale-tasks` tasks run as a child `taps run`, its peak RSS;
//! * conditions: whether the machine was idle while it ran ([`crate::conditions`]);
//! * CPU cost of the overhead and throughput runs: CPU time of the driver (every thread of this
//!   process) and of its workers (child processes, MPI ranks), start-up and shutdown included, per
//!   task, and as cores kept busy (CPU seconds per wall-clock second).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::record::{TaskRecord, read_records};

/// `taps bench` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Executors to compare (repeat the flag); default: every executor in this build.
    #[arg(long = "executor")]
    pub executors: Vec<String>,
    /// Tasks in the one-in-flight overhead run.
    #[arg(long, default_value_t = 10_000)]
    pub latency_tasks: u64,
    /// Tasks in the throughput bag.
    #[arg(long, default_value_t = 100_000)]
    pub throughput_tasks: u64,
    /// Tasks in flight in the throughput bag.
    #[arg(long, default_value_t = 2)]
    pub in_flight: u64,
    /// Payload sizes of the data sweep (bytes, suffixes k/M; empty to skip).
    #[arg(long, value_delimiter = ',', default_value = "10k,100k,1M,10M")]
    pub data_sizes: Vec<String>,
    /// Tasks per data point.
    #[arg(long, default_value_t = 20)]
    pub data_tasks: u64,
    /// Also move the data through the `redis` transformer at this address (e.g. unix:///tmp/redis.sock).
    #[arg(long, value_name = "ADDRESS")]
    pub redis: Option<String>,
    /// Also run a bag of this many tasks (64 in flight) as a child process and report its peak RSS (0 = skip).
    #[arg(long, default_value_t = 0)]
    pub scale_tasks: u64,
    /// Directory for the runs and the report.
    #[arg(long, default_value = "runs/bench")]
    pub out: PathBuf,
    /// Keep every run directory (default: only the report is kept).
    #[arg(long)]
    pub keep: bool,
    /// Extra `taps run` options for every run, after `--` (e.g. -- --engine.executor.max-processes 2).
    #[arg(last = true)]
    pub extra: Vec<String>,
}

/// Median and 95th percentile.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Quantiles {
    /// Median.
    pub median: f64,
    /// 95th percentile.
    pub p95: f64,
}

/// Median and p95 of `v` (nearest rank); zeros for an empty slice.
pub fn quantiles(v: &mut [f64]) -> Quantiles {
    if v.is_empty() {
        return Quantiles::default();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    Quantiles { median, p95: at(0.95) }
}

/// Per-task overhead in seconds: round trip minus task body.
pub fn overheads(recs: &[TaskRecord]) -> Vec<f64> {
    recs.iter()
        .filter_map(|r| {
            let e = r.execution.as_ref()?;
            Some((r.received_time? - r.submit_time) - (e.task_end_time - e.task_start_time))
        })
        .collect()
}

/// Tasks per second from the first submit to the last completion.
pub fn throughput(recs: &[TaskRecord]) -> f64 {
    let first = recs.iter().map(|r| r.submit_time).fold(f64::INFINITY, f64::min);
    let last = recs.iter().filter_map(|r| r.received_time).fold(0.0, f64::max);
    if last > first { recs.len() as f64 / (last - first) } else { 0.0 }
}

/// Parses `10k`, `1M`, `100` into bytes (decimal units: k = 1000).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1_000),
        Some((i, 'M')) => (&t[..i], 1_000_000),
        Some((i, 'G')) => (&t[..i], 1_000_000_000),
        _ => (t, 1),
    };
    num.parse::<u64>().map(|n| n * mult).map_err(|_| format!("invalid size {:?}: expected bytes like 100, 10k, 1M", s))
}

/// One executor's results.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ExecutorReport {
    /// Executor name.
    pub executor: String,
    /// Overhead per task with one in flight, microseconds.
    pub overhead_us: Quantiles,
    /// No-op tasks per second with `in_flight` in flight.
    pub throughput_tasks_per_s: f64,
    /// CPU cost of the overhead run (one in flight).
    pub overhead_cpu: CpuCost,
    /// CPU cost of the throughput run.
    pub throughput_cpu: CpuCost,
    /// Data sweep points.
    pub data: Vec<DataPoint>,
    /// Peak RSS of the scale run in MB, if run.
    pub scale_peak_rss_mb: Option<f64>,
    /// Tasks per second of the scale run.
    pub scale_tasks_per_s: Option<f64>,
}

/// CPU time a run used: the driver's threads and its workers, start-up and shutdown included.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct CpuCost {
    /// CPU microseconds per task.
    pub us_per_task: f64,
    /// CPU seconds per wall-clock second (cores kept busy).
    pub cores: f64,
}

/// User + system CPU seconds of this process (all threads) and of its waited-for descendants.
fn cpu_seconds() -> f64 {
    let get = |who| {
        // SAFETY: zeroed rusage is a valid out-parameter; getrusage only writes it.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer.
        unsafe { libc::getrusage(who, &mut u) };
        let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
        t(u.ru_utime) + t(u.ru_stime)
    };
    get(libc::RUSAGE_SELF) + get(libc::RUSAGE_CHILDREN)
}

/// One point of the data sweep.
#[derive(Debug, Default, Serialize)]
pub(crate) struct DataPoint {
    /// Transformer: none or file.
    pub transformer: String,
    /// Bytes in and bytes out per task.
    pub bytes: u64,
    /// Round trip per task, milliseconds.
    pub round_trip_ms: Quantiles,
    /// Round trip minus task body, milliseconds.
    pub overhead_ms: Quantiles,
    /// 2·bytes / median overhead, GB/s.
    pub effective_gb_per_s: f64,
}

fn run_bag(
    a: &BenchArgs,
    executor: &str,
    tasks: u64,
    in_flight: u64,
    extra: &[String],
) -> anyhow::Result<Vec<TaskRecord>> {
    run_bag_cpu(a, executor, tasks, in_flight, extra).map(|(recs, _)| recs)
}

/// [`run_bag`] and the CPU it cost.
fn run_bag_cpu(
    a: &BenchArgs,
    executor: &str,
    tasks: u64,
    in_flight: u64,
    extra: &[String],
) -> anyhow::Result<(Vec<TaskRecord>, CpuCost)> {
    let mut args: Vec<String> = ["--app", "synthetic", "--app.structure", "bag", "--engine.executor", executor]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(
        [
            "--app.task-count".to_string(),
            tasks.to_string(),
            "--app.bag-max-running".to_string(),
            in_flight.to_string(),
            "--logging.level".to_string(),
            "WARNING".to_string(),
            "--logging.file-name".to_string(),
            "none".to_string(),
        ]
        .into_iter()
        .chain(extra.iter().cloned())
        .chain(a.extra.iter().cloned()),
    );
    let raw = crate::config::parse_args(&args)?;
    let cfg = crate::config::load(&raw)?;
    crate::run::preflight(&cfg).map_err(anyhow::Error::msg)?;
    let dir = crate::rundir::create(
        &format!("{}/{{name}}_{{executor}}_{{timestamp}}", a.out.display()),
        "synthetic",
        executor,
        Path::new("."),
    )?;
    crate::run::init_logging(&cfg, &dir)?;
    let (cpu0, wall0) = (cpu_seconds(), std::time::Instant::now());
    let outcome = crate::run::run_in(&cfg, &dir, &args)?;
    let (cpu, wall) = (cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
    let cost =
        CpuCost { us_per_task: cpu * 1e6 / tasks.max(1) as f64, cores: if wall > 0.0 { cpu / wall } else { 0.0 } };
    if let Some(e) = outcome.error {
        anyhow::bail!("benchmark run in {} failed: {:#}", dir.display(), e);
    }
    let recs = read_records(&dir.join("tasks.jsonl"))?;
    if !a.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    anyhow::ensure!(recs.len() as u64 == tasks, "expected {} records, got {}", tasks, recs.len());
    if let Some(r) = recs.iter().find(|r| r.success != Some(true)) {
        anyhow::bail!("task {} failed: {:?}", r.task_id, r.exception);
    }
    Ok((recs, cost))
}

/// Runs `taps run` as a child and returns (its peak RSS in MB, tasks/s).
fn scale_run(a: &BenchArgs, executor: &str) -> anyhow::Result<(f64, f64)> {
    let exe = std::env::current_exe()?;
    let dir_format = format!("{}/scale_{{executor}}_{{timestamp}}", a.out.display());
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["run", "--app", "synthetic", "--app.structure", "bag", "--engine.executor", executor])
        .args(["--app.task-count", &a.scale_tasks.to_string(), "--app.bag-max-running", "64"])
        .args(["--logging.level", "WARNING", "--run.dir-format", &dir_format])
        .args(&a.extra)
        .stdout(std::process::Stdio::null());
    let mut child = cmd.spawn()?;
    // Peak RSS from the child's own VmHWM: getrusage/wait4's ru_maxrss would also count this
    // process's memory, which a spawned child inherits across exec.
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let status = loop {
        if let Some(kb) = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
        }) {
            peak_kb = peak_kb.max(kb);
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    anyhow::ensure!(status.success(), "the scale run failed ({})", status);
    let dir = std::fs::read_dir(&a.out)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("scale_{}_", executor))))
        .max()
        .ok_or_else(|| anyhow::anyhow!("scale run directory not found"))?;
    let recs = read_records(&dir.join("tasks.jsonl"))?;
    anyhow::ensure!(
        recs.len() as u64 == a.scale_tasks,
        "scale run: {} records for {} tasks",
        recs.len(),
        a.scale_tasks
    );
    let tps = throughput(&recs);
    if !a.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok((peak_kb as f64 / 1024.0, tps))
}

fn bench_executor(a: &BenchArgs, executor: &str, sizes: &[u64]) -> anyhow::Result<ExecutorReport> {
    let mut rep = ExecutorReport { executor: executor.to_string(), ..Default::default() };
    if a.latency_tasks > 0 {
        let (recs, cpu) = run_bag_cpu(a, executor, a.latency_tasks, 1, &[])?;
        let mut o: Vec<f64> = overheads(&recs).into_iter().map(|s| s * 1e6).collect();
        rep.overhead_us = quantiles(&mut o);
        rep.overhead_cpu = cpu;
    }
    if a.throughput_tasks > 0 {
        let (recs, cpu) = run_bag_cpu(a, executor, a.throughput_tasks, a.in_flight, &[])?;
        rep.throughput_tasks_per_s = throughput(&recs);
        rep.throughput_cpu = cpu;
    }
    for &bytes in sizes {
        let redis = a.redis.as_ref().map(|_| "redis");
        for transformer in ["none", "file"].into_iter().chain(redis) {
            let mut extra: Vec<String> = vec![
                "--app.task-data-bytes".into(),
                bytes.to_string(),
                "--engine.transformer".into(),
                transformer.into(),
            ];
            if let (Some(addr), "redis") = (&a.redis, transformer) {
                extra.extend(["--engine.transformer.address".into(), addr.clone()]);
            }
            let recs = run_bag(a, executor, a.data_tasks, 1, &extra)?;
            let mut rt: Vec<f64> = recs.iter().map(|r| (r.received_time.unwrap() - r.submit_time) * 1e3).collect();
            let mut oh: Vec<f64> = overheads(&recs).into_iter().map(|s| s * 1e3).collect();
            let overhead_ms = quantiles(&mut oh);
            rep.data.push(DataPoint {
                transformer: transformer.into(),
                bytes,
                round_trip_ms: quantiles(&mut rt),
                effective_gb_per_s: if overhead_ms.median > 0.0 {
                    2.0 * bytes as f64 / (overhead_ms.median / 1e3) / 1e9
                } else {
                    0.0
                },
                overhead_ms,
            });
        }
    }
    if a.scale_tasks > 0 {
        let (rss, tps) = scale_run(a, executor)?;
        rep.scale_peak_rss_mb = Some(rss);
        rep.scale_tasks_per_s = Some(tps);
    }
    Ok(rep)
}

/// The report as Markdown tables.
pub(crate) fn markdown(a: &BenchArgs, reps: &[ExecutorReport]) -> String {
    let mut s = format!(
        "| executor | overhead median (µs) | overhead p95 (µs) | throughput ({} tasks, {} in flight) | CPU, overhead run (µs/task; cores busy) | CPU, throughput run (µs/task; cores busy) |\n|---|---:|---:|---:|---:|---:|\n",
        a.throughput_tasks, a.in_flight
    );
    for r in reps {
        s += &format!(
            "| {} | {:.1} | {:.1} | {:.0} tasks/s | {:.1}; {:.2} | {:.1}; {:.2} |\n",
            r.executor,
            r.overhead_us.median,
            r.overhead_us.p95,
            r.throughput_tasks_per_s,
            r.overhead_cpu.us_per_task,
            r.overhead_cpu.cores,
            r.throughput_cpu.us_per_task,
            r.throughput_cpu.cores
        );
    }
    if reps.iter().any(|r| !r.data.is_empty()) {
        s += "\n| executor | transformer | bytes in + out | round trip median (ms) | overhead median (ms) | effective GB/s |\n|---|---|---:|---:|---:|---:|\n";
        for r in reps {
            for d in &r.data {
                s += &format!(
                    "| {} | {} | {} + {} | {:.3} | {:.3} | {:.2} |\n",
                    r.executor,
                    d.transformer,
                    d.bytes,
                    d.bytes,
                    d.round_trip_ms.median,
                    d.overhead_ms.median,
                    d.effective_gb_per_s
                );
            }
        }
    }
    for r in reps {
        if let (Some(rss), Some(tps)) = (r.scale_peak_rss_mb, r.scale_tasks_per_s) {
            s += &format!(
                "\n{}: bag of {} tasks (64 in flight): peak RSS {:.0} MB, {:.0} tasks/s\n",
                r.executor, a.scale_tasks, rss, tps
            );
        }
    }
    s
}

/// The Redis floor as a Markdown table (empty without `--redis`).
fn floor_markdown(floor: &[(u64, Quantiles)]) -> String {
    if floor.is_empty() {
        return String::new();
    }
    let mut s = "\nRedis alone: the `redis` rows' four transfers (SET + GETDEL of the argument, then of the result) \
                 from one client, no taps\n\n| bytes in + out | median (ms) | p95 (ms) |\n|---:|---:|---:|\n"
        .to_string();
    for (b, q) in floor {
        s += &format!("| {} + {} | {:.3} | {:.3} |\n", b, b, q.median, q.p95);
    }
    s
}

/// How many times each transport of the process-pool floor is measured (the median is reported).
const FLOOR_ROUNDS: usize = 3;

/// The process-pool's worker count in these runs: `--engine.executor.max-processes` (or
/// `max_processes`) among the extra options, else the pool's default (the available cores).
fn pool_workers(extra: &[String]) -> usize {
    let mut it = extra.iter();
    while let Some(a) = it.next() {
        let (key, value) = match a.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        if (key == "--engine.executor.max-processes" || key == "--engine.executor.max_processes")
            && let Some(n) = value.or_else(|| it.next().cloned()).and_then(|v| v.parse().ok())
        {
            return n;
        }
    }
    crate::executor::available_cores()
}

/// The process-pool floor ([`crate::floor`]): median tasks/s of each transport over
/// [`FLOOR_ROUNDS`] interleaved rounds, with the pool's workers and `--in-flight`.
fn process_pool_floor(a: &BenchArgs) -> std::io::Result<(usize, Vec<(crate::floor::Transport, f64)>)> {
    let workers = pool_workers(&a.extra);
    let mut rates = vec![Vec::new(); crate::floor::Transport::ALL.len()];
    for _ in 0..FLOOR_ROUNDS {
        for (i, t) in crate::floor::Transport::ALL.into_iter().enumerate() {
            rates[i].push(crate::floor::measure(t, workers, a.in_flight as usize, a.throughput_tasks)?.per_second());
        }
    }
    let rows =
        crate::floor::Transport::ALL.into_iter().zip(rates).map(|(t, mut r)| (t, quantiles(&mut r).median)).collect();
    Ok((workers, rows))
}

/// The process-pool floor as a Markdown table (empty when it was not measured).
fn pool_floor_markdown(a: &BenchArgs, floor: &Option<(usize, Vec<(crate::floor::Transport, f64)>)>) -> String {
    let Some((workers, rows)) = floor else {
        return String::new();
    };
    let mut s = format!(
        "\nWhat the machine allows a process pool: the throughput run without taps — one thread, {} forked \
         worker processes, {} requests in flight, {} answered at once ({}-byte messages on sockets), median of {} rounds\n\n\
         | transport | tasks/s |\n|---|---:|\n",
        workers,
        a.in_flight,
        a.throughput_tasks,
        crate::floor::MESSAGE,
        FLOOR_ROUNDS
    );
    for (t, rate) in rows {
        s += &format!("| {} | {:.0} |\n", t.describe(), rate);
    }
    s
}

/// Runs the benchmark; returns the exit code.
pub fn main(a: BenchArgs) -> i32 {
    let sizes: Result<Vec<u64>, String> =
        a.data_sizes.iter().filter(|s| !s.is_empty()).map(|s| parse_size(s)).collect();
    let sizes = match sizes {
        Ok(s) => s,
        Err(e) => return crate::cli::usage_error(e),
    };
    let executors: Vec<String> = if a.executors.is_empty() {
        crate::executor::EXECUTORS.iter().map(|e| e.name.to_string()).filter(|n| n != "mpi").collect()
    } else {
        a.executors.clone()
    };
    for e in &executors {
        if let Err(msg) = crate::executor::find(e) {
            return crate::cli::usage_error(msg);
        }
    }
    crate::engine::install_panic_hook();
    let start = crate::conditions::Sample::now();
    let mut reps = Vec::new();
    for e in &executors {
        eprintln!("taps bench: {} ...", e);
        match bench_executor(&a, e, &sizes) {
            Ok(r) => reps.push(r),
            Err(err) => {
                eprintln!("taps: error: benchmark of {} failed: {:#}", e, err);
                return 1;
            }
        }
    }
    // Redis's own share of the `redis` rows: the same four transfers from one client, no taps.
    let mut floor = Vec::new();
    if let Some(addr) = &a.redis {
        for &bytes in &sizes {
            match crate::redis_store::floor_ms(addr, bytes as usize, a.data_tasks.max(1)) {
                Ok(mut t) => floor.push((bytes, quantiles(&mut t))),
                Err(e) => {
                    eprintln!("taps: error: {}", e);
                    return 1;
                }
            }
        }
    }
    // What the transport itself allows the process-pool's throughput run.
    let mut pool_floor = None;
    if a.throughput_tasks > 0 && executors.iter().any(|e| e == "process-pool") {
        match process_pool_floor(&a) {
            Ok(f) => pool_floor = Some(f),
            Err(e) => {
                eprintln!("taps: error: {}", e);
                return 1;
            }
        }
    }
    let conditions = start.until_now();
    let md = markdown(&a, &reps)
        + &pool_floor_markdown(&a, &pool_floor)
        + &floor_markdown(&floor)
        + "\n"
        + &conditions.line()
        + "\n";
    println!("{}", md);
    let stamp = chrono::Local::now().format("%Y-%m-%d-%H-%M-%S");
    let json = serde_json::json!({
        "environment": crate::environment::collect(),
        "args": format!("{:?}", a),
        "results": reps,
        "process_pool_floor": pool_floor.as_ref().map(|(workers, rows)| serde_json::json!({
            "workers": workers,
            "in_flight": a.in_flight,
            "tasks": a.throughput_tasks,
            "tasks_per_s": rows.iter().map(|(t, r)| serde_json::json!({"transport": t.describe(), "rate": r})).collect::<Vec<_>>(),
        })),
        "redis_floor_ms": floor.iter().map(|(b, q)| serde_json::json!({"bytes": b, "ms": q})).collect::<Vec<_>>(),
        "conditions": conditions,
    });
    let path = a.out.join(format!("bench-{}.json", stamp));
    if let Err(e) = std::fs::create_dir_all(&a.out)
        .and_then(|_| std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()))
    {
        eprintln!("taps: error: cannot write {}: {}", path.display(), e);
        return 1;
    }
    let _ = std::fs::write(a.out.join(format!("bench-{}.md", stamp)), &md);
    eprintln!("taps bench: report written to {}", path.display());
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let q = quantiles(&mut v);
        assert_eq!((q.median, q.p95), (50.5, 95.0));
        let mut one = vec![3.0];
        assert_eq!(quantiles(&mut one), Quantiles { median: 3.0, p95: 3.0 });
    }

    #[test]
    fn the_pool_floor_uses_the_runs_worker_count() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(pool_workers(&v(&["--engine.executor.max-processes", "5"])), 5);
        assert_eq!(pool_workers(&v(&["--app.task-count", "3", "--engine.executor.max_processes=7"])), 7);
        assert_eq!(pool_workers(&[]), crate::executor::available_cores());
    }

    #[test]
    fn sizes_parse_with_decimal_suffixes() {
        assert_eq!(parse_size("10k"), Ok(10_000));
        assert_eq!(parse_size("1M"), Ok(1_000_000));
        assert_eq!(parse_size("7"), Ok(7));
        assert!(parse_size("ten").is_err());
    }
}
