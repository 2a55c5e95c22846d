//! `taps submit` on a real one-node Slurm cluster (`slurm/up.sh`), with `--scheduler slurm` and
//! with `--scheduler pbs` through Debian's `slurm-wlm-torque` qsub/qstat/qdel wrappers.
//!
//! As root the tests start the cluster themselves (`slurm/up.sh` is idempotent and honours
//! `SLURM_LOCAL_*`); otherwise they need `SLURM_CONF` of a running one. They never stop it, and
//! cancel every job they submit if they fail. Waits are bounded (a hang guard, not a speed test).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;

/// Longest wait for a job state before the test fails.
const WAIT: Duration = Duration::from_secs(300);

/// `SLURM_CONF` of the local cluster, started if needed.
fn slurm_conf() -> &'static str {
    static CONF: OnceLock<String> = OnceLock::new();
    CONF.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return std::env::var("SLURM_CONF").expect(
                "the Slurm tests need root (to start slurm/up.sh) or SLURM_CONF of a running cluster (see slurm/README.md)",
            );
        }
        let up = Path::new(env!("CARGO_MANIFEST_DIR")).join("slurm/up.sh");
        let out = Command::new(&up).output().expect("slurm/up.sh runs");
        assert!(
            out.status.success(),
            "slurm/up.sh failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let conf = stdout.trim().strip_prefix("export SLURM_CONF=").expect("up.sh prints export SLURM_CONF=...");
        conf.to_string()
    })
}

/// `taps ARGS` in `cwd` against the local cluster.
fn taps_slurm(cwd: &Path, args: &[&str]) -> Output {
    Command::new(taps_bin()).args(args).current_dir(cwd).env("SLURM_CONF", slurm_conf()).output().expect("taps runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A submitted job; cancelled when dropped unless it has ended.
struct Job {
    run: PathBuf,
    id: String,
    submitted: Instant,
}

impl Job {
    fn status(&self) -> serde_json::Value {
        let out = taps_slurm(&self.run, &["status", "--json", self.run.to_str().unwrap()]);
        assert!(out.status.success(), "taps status: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("taps status --json prints JSON")
    }

    fn status_line(&self) -> String {
        let out = taps_slurm(&self.run, &["status", self.run.to_str().unwrap()]);
        assert!(out.status.success(), "taps status: {}", text(&out.stderr));
        text(&out.stdout).trim_end().to_string()
    }

    /// Polls `taps status` until the state is one of `states`; fails on any other final state.
    fn wait_for(&self, states: &[&str]) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let st = self.status();
            let state = st["state"].as_str().unwrap().to_string();
            if states.contains(&state.as_str()) {
                return st;
            }
            let err = std::fs::read_to_string(self.run.join("job.err")).unwrap_or_default();
            assert!(
                !["finished", "failed", "cancelled", "unknown"].contains(&state.as_str()),
                "job {} ended {} ({}) while waiting for {:?}; job.err:\n{}",
                self.id,
                state,
                st["detail"],
                states,
                err
            );
            assert!(
                Instant::now() < deadline,
                "job {} still {} ({}) after {:?}, waiting for {:?}",
                self.id,
                state,
                st["detail"],
                WAIT,
                states
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `taps status` until its detail is `detail` (a job that has ended may be COMPLETING in
    /// Slurm for a moment: its state is known from job.exit, Slurm's words come a little later).
    fn wait_detail(&self, detail: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let st = self.status();
            if st["detail"] == detail {
                return;
            }
            assert!(Instant::now() < deadline, "job {}: {} after {:?}, waiting for {:?}", self.id, st, WAIT, detail);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the run has written `n` task records (the app is really running).
    fn wait_records(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = std::fs::read_to_string(self.run.join("tasks.jsonl")).map(|t| t.lines().count()).unwrap_or(0);
            if lines >= n {
                return;
            }
            assert!(Instant::now() < deadline, "job {} wrote {} of {} records in {:?}", self.id, lines, n, WAIT);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn scontrol(&self, verb: &str) {
        let out = Command::new("scontrol").args([verb, &self.id]).env("SLURM_CONF", slurm_conf()).output().unwrap();
        assert!(out.status.success(), "scontrol {} {}: {}", verb, self.id, text(&out.stderr));
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // Leaves no job behind: a no-op for a job that has ended.
        let _ = taps_slurm(&self.run, &["cancel", self.run.to_str().unwrap()]);
    }
}

/// `taps submit FLAGS -- BENCH` in `cwd`; the job, after checking what `taps submit` printed and wrote.
fn submit(cwd: &Path, flags: &[&str], bench: &[&str]) -> Job {
    let mut args = vec!["submit"];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(bench);
    submit_args(cwd, &args)
}

/// `taps ARGS` (a submit) in `cwd`; the job.
fn submit_args(cwd: &Path, args: &[&str]) -> Job {
    let before = run_dirs(cwd);
    let submitted = Instant::now();
    let out = taps_slurm(cwd, args);
    assert!(out.status.success(), "taps {:?}: {}{}", args, text(&out.stderr), text(&out.stdout));
    let run = run_dirs(cwd).into_iter().find(|d| !before.contains(d)).expect("a run directory");
    let job: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("job.json")).unwrap()).unwrap();
    let id = job["job_id"].as_str().expect("job.json has the job id").to_string();
    assert_eq!(job["submitted"], true);
    let sched = job["scheduler"].as_str().unwrap();
    assert!(text(&out.stdout).starts_with(&format!("Submitted {} job {}\n", sched, id)), "{}", text(&out.stdout));
    assert!(id.chars().all(|c| c.is_ascii_digit()), "Slurm (and its qsub) give numeric ids: {:?}", id);
    Job { run, id, submitted }
}

fn synthetic(count: &str, sleep: &str) -> Vec<String> {
    ["--app", "synthetic", "--app.structure", "bag", "--app.task-count", count, "--app.bag-max-running", "2"]
        .into_iter()
        .chain(["--app.task-sleep", sleep, "--app.warmup-tasks", "2", "--engine.executor", "thread-pool"])
        .map(String::from)
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The run finished completely: every record, the log's last line, the job's stdout and exit code.
fn check_finished_run(job: &Job, tasks: usize) {
    let recs = records(&job.run);
    check_record_invariants(&recs);
    assert_eq!(recs.len(), tasks, "one record per task");
    assert!(recs.iter().all(|r| r.success == Some(true)));
    let out = std::fs::read_to_string(job.run.join("job.out")).expect("the job's stdout is in the run directory");
    assert!(out.starts_with(&format!("taps job {} on ", job.id)), "{}", out);
    assert!(out.contains("Finished benchmark (app=synthetic"), "job.out:\n{}", out);
    assert!(job.run.join("job.err").is_file());
    assert_eq!(std::fs::read_to_string(job.run.join("job.exit")).unwrap(), "0\n");
    assert!(std::fs::read_to_string(job.run.join("log.txt")).unwrap().contains("Finished benchmark"));
}

#[test]
fn slurm_synthetic_run_finishes_with_complete_records() {
    let tmp = tempfile::tempdir().unwrap();
    let bench = synthetic("20", "0.01");
    let job = submit(tmp.path(), &["--scheduler", "slurm", "--walltime", "00:05:00"], &strs(&bench));
    job.wait_for(&["finished"]);
    eprintln!("slurm job {}: submit -> finished (seen by taps status) in {:.2?}", job.id, job.submitted.elapsed());
    job.wait_detail("JobState=COMPLETED ExitCode=0:0");
    assert_eq!(job.status_line(), format!("finished: slurm job {} (JobState=COMPLETED ExitCode=0:0)", job.id));
    check_finished_run(&job, 20 + 2);
    // Slurm ran exactly the script in the run directory, with its output there.
    let out =
        Command::new("scontrol").args(["-o", "show", "job", &job.id]).env("SLURM_CONF", slurm_conf()).output().unwrap();
    let line = text(&out.stdout);
    let r = job.run.display();
    for want in [
        format!("Command={r}/job.sh"),
        format!("StdOut={r}/job.out"),
        format!("StdErr={r}/job.err"),
        format!("WorkDir={r}"),
    ] {
        assert!(line.contains(&want), "{} not in {}", want, line);
    }
    assert!(line.contains("TimeLimit=00:05:00"), "{}", line);
    // The run's config.toml can be fed back to taps run.
    let again = run_ok(tmp.path(), &["run", "-c", job.run.join("config.toml").to_str().unwrap()]);
    assert_eq!(records(&again).len(), 22);
}

#[test]
fn slurm_jobs_run_the_file_apps_from_their_example_configs_on_mpi_ranks() {
    // docking, moldesign and montage run real programs (vina, obabel, xtb, Montage) in each task's
    // own directory: one job each, from the app's example config, on 2 MPI ranks (rank 0 drives).
    let tmp = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    for (app, output, min_rows) in
        [("montage", "data/m17.fits", 0), ("docking", "results.csv", 6), ("moldesign", "results.csv", 8)]
    {
        let config = format!("{}/apps/{}/config.toml", root, app);
        let flags = ["--scheduler", "slurm", "--walltime", "00:10:00", "--ranks-per-node", "2"];
        let job = submit(tmp.path(), &flags, &["-c", &config, "--engine.executor", "mpi"]);
        job.wait_for(&["finished"]);
        eprintln!("slurm {} job {}: submit -> finished in {:.2?}", app, job.id, job.submitted.elapsed());
        assert_eq!(std::fs::read_to_string(job.run.join("job.exit")).unwrap(), "0\n", "{}", app);
        let recs = records(&job.run);
        check_record_invariants(&recs);
        assert!(!recs.is_empty(), "{}: no records", app);
        for r in recs.iter().filter(|r| r.worker.is_some()) {
            let w = r.worker.as_deref().unwrap();
            assert!(w.starts_with("rank-") && w != "rank-0", "{}: ran on {} (want a worker rank)", app, w);
        }
        let out = job.run.join(output);
        assert!(out.is_file(), "{}: no {}", app, out.display());
        if min_rows > 0 {
            let rows = std::fs::read_to_string(&out).unwrap().lines().count() - 1;
            assert!(rows >= min_rows, "{}: {} rows in {}, want at least {}", app, rows, output, min_rows);
        }
    }
}

#[test]
fn slurm_job_runs_taps_from_a_directory_named_like_shell() {
    // --taps-bin with every shell metacharacter: the real job runs taps from there, and the name
    // never runs as shell (no canary in the submit directory or the run directory).
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let bin = d.join("bin $(touch canary); `touch canary` && touch canary '\" |x");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(taps_bin(), bin.join("taps")).unwrap();
    let bench = synthetic("4", "0");
    let job = submit(d, &["--scheduler", "slurm", "--taps-bin", bin.to_str().unwrap()], &strs(&bench));
    job.wait_for(&["finished"]);
    check_finished_run(&job, 4 + 2);
    let script = std::fs::read_to_string(job.run.join("job.sh")).unwrap();
    assert!(
        script.contains(&format!("\n'{}/taps' run -c ", bin.display().to_string().replace('\'', r"'\''"))),
        "{}",
        script
    );
    assert!(!d.join("canary").exists() && !job.run.join("canary").exists());
}

#[test]
fn slurm_site_example_runs_as_documented() {
    // slurm/README.md: taps submit -c apps/synthetic/config.toml -c slurm/site-example.toml
    let tmp = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let (app, site) = (format!("{}/apps/synthetic/config.toml", root), format!("{}/slurm/site-example.toml", root));
    let job = submit_args(tmp.path(), &["submit", "-c", &app, &site]);
    job.wait_for(&["finished"]);
    eprintln!("slurm site-example job {}: submit -> finished in {:.2?}", job.id, job.submitted.elapsed());
    let recs = records(&job.run);
    check_record_invariants(&recs);
    assert_eq!(recs.len(), 1000 + 8);
    // 3 tasks on a 2-core node: --ntasks (Slurm refuses --ntasks-per-node=3 there), whole node.
    let out =
        Command::new("scontrol").args(["-o", "show", "job", &job.id]).env("SLURM_CONF", slurm_conf()).output().unwrap();
    let line = text(&out.stdout);
    assert!(
        line.contains("NumTasks=3") && line.contains("OverSubscribe=NO") && line.contains("Partition=debug"),
        "{}",
        line
    );
}

#[test]
fn slurm_status_goes_queued_running_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let bench = synthetic("1000", "0.2");
    let job = submit(tmp.path(), &["--scheduler", "slurm", "--directive", "--hold"], &strs(&bench));
    let st = job.wait_for(&["queued"]);
    let held =
        format!("waiting for a release: it is held (scontrol release {}); JobState=PENDING Reason=JobHeldUser", job.id);
    assert_eq!(st["detail"], held);
    assert_eq!(job.status_line(), format!("queued: slurm job {} ({})", job.id, held));
    job.scontrol("release");
    let st = job.wait_for(&["running"]);
    assert_eq!(st["detail"], "JobState=RUNNING");
    job.wait_records(3);

    let out = taps_slurm(tmp.path(), &["cancel", job.run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("Cancelled slurm job {} ({})\n", job.id, job.run.display()));
    let st = job.wait_for(&["cancelled"]);
    assert!(st["detail"].as_str().unwrap().starts_with("JobState=CANCELLED"), "{}", st);
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(job.run.join("job.json")).unwrap()).unwrap();
    assert!(rec["cancel_time"].as_f64().unwrap() >= rec["submit_time"].as_f64().unwrap());
    assert!(!job.run.join("job.exit").exists(), "a cancelled job does not get to write its exit code");
    // Again: nothing left to cancel.
    let out = taps_slurm(tmp.path(), &["cancel", job.run.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), format!("slurm job {} already cancelled; nothing to cancel\n", job.id));
}

#[test]
fn slurm_job_whose_run_fails_is_failed_with_its_error_captured() {
    let tmp = tempfile::tempdir().unwrap();
    let bench = synthetic("5", "0");
    let job = submit(tmp.path(), &["--scheduler", "slurm", "--directive", "#SBATCH --hold"], &strs(&bench));
    job.wait_for(&["queued"]);
    // Make the prepared directory unusable: taps run refuses a directory with records in it.
    std::fs::write(job.run.join("tasks.jsonl"), "").unwrap();
    job.scontrol("release");
    job.wait_for(&["failed"]);
    job.wait_detail("JobState=FAILED ExitCode=2:0");
    assert_eq!(std::fs::read_to_string(job.run.join("job.exit")).unwrap(), "2\n");
    let err = std::fs::read_to_string(job.run.join("job.err")).unwrap();
    assert!(err.contains("already holds tasks.jsonl from an earlier run"), "job.err:\n{}", err);
}

#[test]
fn slurm_out_of_reach_is_one_line_and_nothing_created() {
    // The cluster's config with a controller port nobody listens on (taken from the kernel, then freed).
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf: String = std::fs::read_to_string(slurm_conf())
        .unwrap()
        .lines()
        .map(|l| if l.starts_with("SlurmctldPort=") { format!("SlurmctldPort={}\n", port) } else { format!("{}\n", l) })
        .collect();
    let dead = d.join("slurm.conf");
    std::fs::write(&dead, conf).unwrap();
    let mut args = vec!["submit", "--scheduler", "slurm", "--"];
    let bench = synthetic("3", "0");
    args.extend(strs(&bench));
    let out = Command::new(taps_bin()).args(&args).current_dir(d).env("SLURM_CONF", &dead).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", err);
    assert_eq!(err.lines().count(), 1, "{}", err);
    assert!(
        err.starts_with("taps: error: cannot ask Slurm whether the job could run (nothing was created): "),
        "{}",
        err
    );
    assert!(err.contains("Unable to contact slurm controller"), "{}", err);
    assert!(run_dirs(d).is_empty());
}

/// The local node's CPUs and memory (MB), as Slurm has them.
fn node_size() -> (u32, u64) {
    let out = Command::new("scontrol").args(["-o", "show", "node"]).env("SLURM_CONF", slurm_conf()).output().unwrap();
    let line = text(&out.stdout);
    let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).expect(k).to_string();
    (field("CPUTot=").parse().unwrap(), field("RealMemory=").parse().unwrap())
}

/// Jobs named `name` that Slurm knows.
fn jobs_named(name: &str) -> String {
    let out =
        Command::new("squeue").args(["-h", "-n", name, "-o", "%i"]).env("SLURM_CONF", slurm_conf()).output().unwrap();
    assert!(out.status.success(), "squeue: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn slurm_refuses_a_job_the_partition_can_never_start() {
    // Slurm itself accepts --ntasks-per-node=3 on a 2-core node, and the job pends for ever
    // (Reason=PartitionConfig); taps asks sbatch --test-only first and refuses it.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (cpus, mem) = node_size();
    let bench = synthetic("3", "0");
    let too_many = (cpus + 1).to_string();
    let described = format!("partition debug: 1 node of {} CPUs and {} MB", cpus, mem);
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (
            vec!["--ranks-per-node", &too_many],
            vec![
                format!("Slurm would never start this job (1 node x {} tasks per node)", too_many),
                "Requested node configuration is not available".into(),
                described.clone(),
                format!("--ranks-per-node {} or fewer", cpus),
                "--directive --overcommit".into(),
            ],
        ),
        (
            vec!["--nodes", "2"],
            vec![
                "(2 nodes x 1 task per node)".into(),
                described.clone(),
                "ask for --nodes 1 or fewer, or another --partition".into(),
            ],
        ),
        (
            vec!["--partition", "nosuch"],
            vec![
                "Invalid partition name specified".into(),
                "Slurm has no partition \"nosuch\" (sinfo -s lists them)".into(),
            ],
        ),
    ];
    for (flags, needles) in cases {
        let mut args = vec!["submit", "--scheduler", "slurm", "--job-name", "taps-never"];
        args.extend(flags);
        args.push("--");
        args.extend(strs(&bench));
        let out = taps_slurm(d, &args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{:?}: {}", args, err);
        assert_eq!(err.lines().count(), 1, "{}", err);
        assert!(err.starts_with("taps: error: "), "{}", err);
        for n in needles {
            assert!(err.contains(&n), "{:?} not in {}", n, err);
        }
        assert!(run_dirs(d).is_empty(), "no run directory for a refused job");
        assert_eq!(jobs_named("taps-never"), "", "nothing was queued");
    }
    // With --overcommit the same ranks fit: slurm_site_example_runs_as_documented runs them.
}

#[test]
fn slurm_refuses_a_run_that_cannot_fit_the_partitions_nodes() {
    // cholesky holds A and L, 16·n² bytes: at n = 60,000 that is 57.6 GB, more than any node has.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let args = [
        "submit",
        "--scheduler",
        "slurm",
        "--job-name",
        "taps-never",
        "--",
        "--app",
        "cholesky",
        "--app.matrix-size",
        "60000",
        "--app.block-size",
        "1000",
        "--engine.executor",
        "thread-pool",
    ];
    let out = taps_slurm(d, &args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", err);
    assert_eq!(err.lines().count(), 1, "{}", err);
    let (_, mem) = node_size();
    let gib = format!("has {:.1} GiB available", mem as f64 / 1024.0);
    for n in [
        "app cholesky needs at least 53.6 GiB",
        "a node of the default partition",
        &gib,
        "RealMemory of its smallest node",
    ] {
        assert!(err.contains(n), "{:?} not in {}", n, err);
    }
    assert!(run_dirs(d).is_empty(), "no run directory for a refused job");
    assert_eq!(jobs_named("taps-never"), "", "nothing was queued");
}

#[test]
fn slurm_status_says_a_job_is_stuck_why_and_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let bench = synthetic("3", "0");
    let job = submit(tmp.path(), &["--scheduler", "slurm", "--directive", "--hold"], &strs(&bench));
    job.wait_for(&["queued"]);
    // Grown past what any node has after submission (as when a site shrinks a partition):
    // Slurm keeps it pending for ever with Reason=PartitionConfig.
    let (cpus, _) = node_size();
    // scontrol applies the update and the release, and says that the job can no longer run.
    let update = format!("MinCPUsNode={}", cpus + 1);
    for args in [vec!["update", &format!("JobId={}", job.id), &update], vec!["release", &job.id]] {
        let out = Command::new("scontrol").args(&args).env("SLURM_CONF", slurm_conf()).output().unwrap();
        let err = text(&out.stderr);
        assert!(
            out.status.success() || err.contains("Requested partition configuration not available now"),
            "scontrol {:?}: {}",
            args,
            err
        );
    }
    let st = job.wait_for(&["stuck"]);
    let detail = st["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!(
            "can never start: it asks for more CPUs, memory or other resources per node than the partition's \
             nodes have; cancel it (taps cancel {}) and submit again with fewer ranks per node",
            job.run.display()
        )) && detail.contains("--overcommit")
            && detail.ends_with("; JobState=PENDING Reason=PartitionConfig"),
        "{}",
        detail
    );
    assert_eq!(job.status_line(), format!("stuck: slurm job {} ({})", job.id, detail));
    let out = taps_slurm(tmp.path(), &["cancel", job.run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    job.wait_for(&["cancelled"]);
}

#[test]
fn sinfo_partition_sizes_are_the_nodes() {
    // What taps reads from sinfo (the sizes in refusals, and the limits of a run under submit).
    let out = Command::new("sinfo").args(["-h", "-o", "%P|%D|%c|%m"]).env("SLURM_CONF", slurm_conf()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (cpus, memory_mb) = node_size();
    let p = taps::launchers::slurm::parse_sinfo(&text(&out.stdout), None).expect("the default partition");
    assert_eq!(p.name, "debug");
    assert_eq!(p.smallest(), Some(taps::launchers::slurm::NodeSize { count: 1, cpus, memory_mb }));
    assert_eq!(taps::launchers::slurm::parse_sinfo(&text(&out.stdout), Some("debug")), Some(p));
}

#[test]
fn pbs_wrappers_run_a_synthetic_job_over_slurm() {
    let tmp = tempfile::tempdir().unwrap();
    let bench = synthetic("10", "0.01");
    let flags = ["--scheduler", "pbs", "--ranks-per-node", "2", "--queue", "debug", "--walltime", "00:05:00"];
    let job = submit(tmp.path(), &flags, &strs(&bench));
    job.wait_for(&["finished"]);
    eprintln!("pbs (qsub wrapper) job {}: submit -> finished in {:.2?}", job.id, job.submitted.elapsed());
    // The wrappers' qstat has no -F json and no exit status: `C`, and the job's own exit code
    // (which answers first while the wrappers still show the ending job as `R`).
    job.wait_detail("job_state=C, job.exit 0");
    check_finished_run(&job, 10 + 2);
    // qsub -o/-e put the output in the run directory, not the wrapper's <script>.o<ID>.
    let stray: Vec<_> = std::fs::read_dir(&job.run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.rsplit_once(".o").or(n.rsplit_once(".e")).is_some_and(|(_, id)| id == job.id))
        .collect();
    assert!(stray.is_empty(), "{:?}", stray);
    // #PBS -l select=1:ncpus=2:mpiprocs=2 became two Slurm tasks.
    let out =
        Command::new("scontrol").args(["-o", "show", "job", &job.id]).env("SLURM_CONF", slurm_conf()).output().unwrap();
    assert!(text(&out.stdout).contains("NumTasks=2"), "{}", text(&out.stdout));
}

#[test]
fn pbs_wrappers_cancel_a_running_job() {
    let tmp = tempfile::tempdir().unwrap();
    let bench = synthetic("1000", "0.2");
    let job = submit(tmp.path(), &["--scheduler", "pbs"], &strs(&bench));
    let st = job.wait_for(&["running"]);
    assert_eq!(st["detail"], "job_state=R");
    job.wait_records(3);
    let out = taps_slurm(tmp.path(), &["cancel", job.run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The wrappers report a deleted job as `C` like a finished one; no job.exit and our cancel decide.
    let st = job.wait_for(&["cancelled"]);
    assert_eq!(st["detail"], "job_state=C");
}

// ---- the MPI executor on 3 ranks (needs `--features mpi`, the MPI executor and the cholesky app) --

#[cfg(feature = "mpi")]
mod mpi {
    use super::*;

    const MPI_FLAGS: &[&str] = &[
        "--scheduler",
        "slurm",
        "--ranks-per-node",
        "3",
        "--walltime",
        "00:10:00",
        // 3 ranks on 2 cores: the whole node, oversubscribed.
        "--directive",
        "--exclusive",
        "--directive",
        "--overcommit",
    ];

    fn check_mpi_run(job: &Job, app: &str) {
        let recs = records(&job.run);
        check_record_invariants(&recs);
        assert!(!recs.is_empty());
        assert!(recs.iter().all(|r| r.success == Some(true)), "every task succeeded");
        let out = std::fs::read_to_string(job.run.join("job.out")).unwrap();
        assert!(out.contains(&format!("Finished benchmark (app={}", app)), "job.out:\n{}", out);
        assert_eq!(std::fs::read_to_string(job.run.join("job.exit")).unwrap(), "0\n");
        assert!(!job.run.join(".taps-mpi-status").exists(), "the job script removes rank 0's status file");
    }

    /// The job script's launch line.
    fn launch_line(job: &Job) -> String {
        let script = std::fs::read_to_string(job.run.join("job.sh")).unwrap();
        script.lines().find(|l| l.contains(" worker -c ")).expect("a launch line").to_string()
    }

    #[test]
    fn slurm_mpi_synthetic_on_three_ranks() {
        taps::executor::find("mpi").expect("built with --features mpi: the MPI executor must exist");
        let tmp = tempfile::tempdir().unwrap();
        let mut bench = synthetic("30", "0.01");
        bench.extend(["--engine.executor".into(), "mpi".into()]);
        let job = submit(tmp.path(), MPI_FLAGS, &strs(&bench));
        job.wait_for(&["finished"]);
        eprintln!("slurm MPI job {}: submit -> finished in {:.2?}", job.id, job.submitted.elapsed());
        check_mpi_run(&job, "synthetic");
        assert_eq!(records(&job.run).len(), 30 + 2);
        // Slurm's default launch profile: mpirun (with recovery), as taps run uses it.
        assert!(
            launch_line(&job).starts_with("mpirun \"${taps_root_args[@]}\" \"${taps_oversubscribe_args[@]}\" -np 3 ")
        );
    }

    #[test]
    fn slurm_mpi_cholesky_on_three_ranks() {
        taps::executor::find("mpi").expect("built with --features mpi: the MPI executor must exist");
        taps::apps::find("cholesky").expect("the cholesky app must exist");
        let tmp = tempfile::tempdir().unwrap();
        let bench =
            ["--app", "cholesky", "--app.matrix-size", "200", "--app.block-size", "50", "--engine.executor", "mpi"];
        // The srun profile, asked for.
        let job = submit(tmp.path(), &[MPI_FLAGS, &["--launcher", "srun"]].concat(), &bench);
        job.wait_for(&["finished"]);
        eprintln!("slurm MPI cholesky job {}: submit -> finished in {:.2?}", job.id, job.submitted.elapsed());
        check_mpi_run(&job, "cholesky");
        assert!(
            launch_line(&job).starts_with("srun --mpi=pmix --kill-on-bad-exit=0 --ntasks 3 "),
            "{}",
            launch_line(&job)
        );
    }

    /// The pid of the worker process of MPI rank `rank` of the job of `run` (from the rank's
    /// environment, as mpirun sets it), and that environment.
    fn rank_process(run: &Path, rank: u32) -> Option<(u32, Vec<String>)> {
        let run = run.to_str().unwrap();
        processes().into_iter().find_map(|(pid, _, state)| {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid)).ok()?;
            let args: Vec<String> = cmdline.split(|&b| b == 0).map(text).collect();
            if state == 'Z' || !args.iter().any(|a| a == "worker") || !args.iter().any(|a| a == run) {
                return None;
            }
            let environ = std::fs::read(format!("/proc/{}/environ", pid)).ok()?;
            let env: Vec<String> = environ.split(|&b| b == 0).map(text).collect();
            env.iter().any(|v| *v == format!("OMPI_COMM_WORLD_RANK={}", rank)).then_some((pid, env))
        })
    }

    #[test]
    fn slurm_mpi_job_loses_a_killed_rank_and_the_others_finish_the_work() {
        // As `taps run --engine.executor mpi` does (tests/mpi.rs): kill rank 1 while it runs a
        // task; its task is recorded as WorkerLost, the others run on rank 2, and the run and
        // the job say so. Under srun (PMIx) the whole step would be killed instead.
        let tmp = tempfile::tempdir().unwrap();
        let bench = [
            "--app",
            "synthetic",
            "--app.structure",
            "reduce",
            "--app.task-count",
            "12",
            "--app.task-sleep",
            "0.5",
            "--engine.executor",
            "mpi",
            "--run.env-vars",
            r#"{"TAPS_PROBE": "seen by every rank"}"#,
        ];
        let job = submit(tmp.path(), MPI_FLAGS, &bench);
        job.wait_for(&["running"]);
        let log = job.run.join("log.txt");
        wait_for(|| std::fs::read_to_string(&log).ok().filter(|l| l.contains("Submitted reduce task")));
        let (victim, env) = wait_for(|| rank_process(&job.run, 1));
        let (_, env2) = wait_for(|| rank_process(&job.run, 2));
        // run.env_vars reach every rank through the launch's environment.
        for e in [&env, &env2] {
            assert!(e.iter().any(|v| v == "TAPS_PROBE=seen by every rank"), "{:?}", e);
        }
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: plain syscall on a process of this test's own job.
        assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);

        let st = job.wait_for(&["failed"]);
        assert_eq!(std::fs::read_to_string(job.run.join("job.exit")).unwrap(), "1\n", "rank 0's exit status");
        let named = format!("MPI rank 1 (pid {} on {}) died", victim, taps::engine::hostname());
        let lost = format!("The run lost 1 worker rank(s): {}", named);
        let out = std::fs::read_to_string(job.run.join("job.out")).unwrap();
        assert!(out.contains(&lost), "job.out:\n{}", out);
        assert_eq!(st["run_error"].as_str(), Some(lost.as_str()), "{}", st);
        assert!(job.status_line().ends_with(&format!("): {}", lost)), "{}", job.status_line());

        let recs = records(&job.run);
        assert_eq!(recs.len(), 13, "every task has exactly one record");
        check_record_invariants(&recs);
        let first: Vec<_> = recs.iter().filter(|r| r.parent_task_ids.is_empty()).collect();
        let failed: Vec<_> = first.iter().filter(|r| r.success == Some(false)).collect();
        assert_eq!(failed.len(), 1, "exactly the task running on rank 1 fails: {:?}", failed);
        let e = failed[0].exception.as_ref().unwrap();
        assert_eq!((e.kind.as_str(), e.message.clone()), ("WorkerLost", format!("{} while running this task", named)));
        assert_eq!(failed[0].worker.as_deref(), Some("rank-1"));
        // Its queued task and the rest ran on rank 2.
        assert!(first.iter().filter(|r| r.success == Some(true)).all(|r| r.worker.as_deref() == Some("rank-2")));
        assert_eq!(first.iter().filter(|r| r.success == Some(true)).count(), 11);
        let reduce = recs.iter().find(|r| !r.parent_task_ids.is_empty()).unwrap();
        assert_eq!(reduce.exception.as_ref().unwrap().kind, "ParentFailed");
        assert!(!job.run.join(".taps-mpi-status").exists());
    }

    #[test]
    fn pbs_wrappers_mpi_synthetic_on_two_ranks() {
        taps::executor::find("mpi").expect("built with --features mpi: the MPI executor must exist");
        let tmp = tempfile::tempdir().unwrap();
        let mut bench = synthetic("10", "0.01");
        bench.extend(["--engine.executor".into(), "mpi".into()]);
        // mpiexec --hostfile "$PBS_NODEFILE" (written by generate_pbs_nodefile under the wrappers).
        let job = submit(tmp.path(), &["--scheduler", "pbs", "--ranks-per-node", "2"], &strs(&bench));
        job.wait_for(&["finished"]);
        assert_eq!(records(&job.run).len(), 10 + 2);
        assert!(
            std::fs::read_to_string(job.run.join("job.sh"))
                .unwrap()
                .contains("mpiexec -n 2 --hostfile \"$PBS_NODEFILE\" ")
        );
    }
}

/// `taps submit ... sweep` with `-c BASE SWEEP-ARGUMENTS` in `cwd`; the job (its run
/// directory is the sweep's `--out`).
#[cfg(feature = "mpi")]
fn submit_sweep(cwd: &Path, base: &Path, sweep: &[&str], out: &Path) -> Job {
    let flags = ["--scheduler", "slurm", "--ranks-per-node", "3", "--walltime", "00:10:00"];
    // 3 ranks on 2 cores: the whole node, oversubscribed.
    let node = ["--directive", "--exclusive", "--directive", "--overcommit"];
    let args = [
        &["submit"],
        &flags[..],
        &node,
        &["sweep", "-c", base.to_str().unwrap()],
        sweep,
        &["--out", out.to_str().unwrap()],
    ]
    .concat();
    let submitted = Instant::now();
    let o = taps_slurm(cwd, &args);
    assert!(o.status.success(), "taps {:?}: {}", args, text(&o.stderr));
    let job: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("job.json")).unwrap()).unwrap();
    let id = job["job_id"].as_str().expect("job.json has the job id").to_string();
    assert!(text(&o.stdout).starts_with(&format!("Submitted slurm job {}\nSweep directory: {}\n", id, out.display())));
    Job { run: out.to_path_buf(), id, submitted }
}

/// A whole sweep as one Slurm job (`taps submit ... sweep`): one `taps sweep` on the first node
/// runs every executor, the mpi cell starting its 3 ranks inside the allocation; `taps status`
/// follows it. `taps cancel` in the middle of a cell (scancel signals the sweep and its cell at
/// once) records the cell's tasks, and the same command submitted again resumes the sweep.
#[cfg(feature = "mpi")]
#[test]
fn slurm_submitted_sweep_runs_every_executor_in_one_job_and_resumes_after_taps_cancel() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base.toml");
    std::fs::write(&base, "[app]\nname = \"synthetic\"\nstructure = \"bag\"\ntask_count = 3\nbag_max_running = 2\n")
        .unwrap();
    let all = tmp.path().join("all");
    let job = submit_sweep(tmp.path(), &base, &["--vary", "engine.executor=thread-pool,process-pool,mpi"], &all);
    job.wait_for(&["finished"]);
    eprintln!("slurm sweep job {}: submit -> finished in {:.2?}", job.id, job.submitted.elapsed());
    assert!(job.status_line().starts_with(&format!("finished: slurm job {} (", job.id)), "{}", job.status_line());
    let out = std::fs::read_to_string(all.join("job.out")).unwrap();
    assert!(out.contains(&format!("Sweep of 3 cell(s) in {}: 3 ok, 0 failed", all.display())), "{}", out);
    assert_eq!(std::fs::read_to_string(all.join("job.exit")).unwrap(), "0\n");
    for ex in ["thread-pool", "process-pool", "mpi"] {
        let cell = all.join(format!("cells/engine.executor={}_r1", ex));
        let recs = records(&cell);
        check_record_invariants(&recs);
        assert_eq!(recs.len(), 3, "{}", ex);
        assert!(recs.iter().all(|r| r.success == Some(true)), "{}", ex);
    }
    let mpi = all.join("cells/engine.executor=mpi_r1");
    let cfg = std::fs::read_to_string(mpi.join("config.toml")).unwrap();
    assert!(cfg.contains("ranks = 3\n"), "the mpi cell takes the allocation's ranks:\n{}", cfg);
    let ranks: std::collections::BTreeSet<_> = records(&mpi).into_iter().filter_map(|r| r.worker).collect();
    assert!(ranks.iter().all(|w| w == "rank-1" || w == "rank-2"), "{:?}", ranks);

    let resumed = tmp.path().join("resumed");
    let sweep = ["--vary", "app.task_sleep=0,10,0.01"];
    let job = submit_sweep(tmp.path(), &base, &sweep, &resumed);
    let cells = resumed.join("cells");
    let log = cells.join("app.task_sleep=10_r1/log.txt");
    job.wait_for(&["running"]);
    wait_for(|| std::fs::read_to_string(&log).ok().filter(|l| l.contains("Running app")));
    let o = taps_slurm(tmp.path(), &["cancel", resumed.to_str().unwrap()]);
    assert!(o.status.success(), "taps cancel: {}", text(&o.stderr));
    job.wait_for(&["cancelled"]);
    let interrupted = "taps: sweep interrupted by signal 15: 1 of 3 cell(s) finished";
    let err = wait_for(|| std::fs::read_to_string(resumed.join("job.err")).ok().filter(|e| e.contains(interrupted)));
    let recs = records(&cells.join("app.task_sleep=10_r1"));
    assert_eq!(recs.len(), 2, "the two tasks in flight, recorded as failed: {}", err);
    assert!(recs.iter().all(|r| r.success != Some(true)));
    let first = cells.join("app.task_sleep=0_r1/tasks.jsonl");
    let mtime = std::fs::metadata(&first).unwrap().modified().unwrap();

    let job = submit_sweep(tmp.path(), &base, &sweep, &resumed);
    job.wait_for(&["finished"]);
    let err = std::fs::read_to_string(resumed.join("job.err")).unwrap();
    assert!(err.contains("resuming: 1 of 3 cell(s) already finished, skipped"), "{}", err);
    let out = std::fs::read_to_string(resumed.join("job.out")).unwrap();
    assert!(out.contains("3 ok, 0 failed"), "{}", out);
    assert_eq!(std::fs::metadata(&first).unwrap().modified().unwrap(), mtime, "the finished cell ran again");
    for c in ["app.task_sleep=0_r1", "app.task_sleep=10_r1", "app.task_sleep=0.01_r1"] {
        let recs = records(&cells.join(c));
        assert_eq!(recs.len(), 3, "{}", c);
        assert!(recs.iter().all(|r| r.success == Some(true)), "{}", c);
    }
}
