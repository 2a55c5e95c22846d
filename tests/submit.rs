//! `taps submit` without a cluster: golden job scripts for every combination of settings (checked
//! with `bash -n`), dry runs, bad input, and submit/status/cancel end to end against a PBS Pro
//! test double (`qsub`/`qstat`/`qdel` scripts on PATH that record their arguments and answer in
//! PBS Pro's formats). The real Slurm cluster and Slurm's PBS wrappers are in `tests/slurm.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use taps::launchers::job::{JobSpec, render};
use taps::submit::effective_options;

const RUN: &str = "/scratch/alice/runs/run-1";
const BIN: &str = "/opt/taps/bin";

/// (golden name, executor, `[submit]` table).
const CASES: &[(&str, &str, &str)] = &[
    ("slurm_minimal", "thread-pool", r#"scheduler = "slurm""#),
    (
        "slurm_full",
        "thread-pool",
        r##"scheduler = "slurm"
nodes = 2
ranks_per_node = 4
walltime = "1-12:00:00"
partition = "compute"
account = "proj42"
qos = "debug"
job_name = "cholesky-scan"
directives = ["--exclusive", "#SBATCH --mem=0", "#DW jobdw capacity=1GB access_mode=striped type=scratch"]
modules = ["openmpi/4.1", "PrgEnv-gnu cray-hdf5"]
setup = ["export OMP_NUM_THREADS=1", "ulimit -n 4096"]
launcher_args = ["--not-used-without-mpi"]"##,
    ),
    (
        "slurm_mpi_default",
        "mpi",
        r#"scheduler = "slurm"
ranks_per_node = 3
walltime = "00:10:00"
directives = ["--exclusive", "--overcommit"]"#,
    ),
    (
        "slurm_mpi_srun_multinode",
        "mpi",
        r#"scheduler = "slurm"
nodes = 2
ranks_per_node = 2
launcher = "srun"
launcher_args = ["--mpi=pmi2"]"#,
    ),
    ("slurm_mpi_mpirun", "mpi", "scheduler = \"slurm\"\nnodes = 2\nranks_per_node = 3\nlauncher = \"mpirun\""),
    (
        "slurm_mpi_mpiexec",
        "mpi",
        "scheduler = \"slurm\"\nranks_per_node = 4\nlauncher = \"mpiexec\"\nlauncher_args = [\"--bind-to\", \"none\"]",
    ),
    ("pbs_minimal", "thread-pool", r#"scheduler = "pbs""#),
    (
        "pbs_full",
        "thread-pool",
        r##"scheduler = "pbs"
nodes = 2
ranks_per_node = 64
walltime = "00:30:00"
partition = "debug-scaling"
account = "proj42"
job_name = "scan"
directives = ["-l place=scatter:excl", "#PBS -l filesystems=home:eagle"]
modules = ["openmpi/4.1"]
setup = ["export OMP_NUM_THREADS=1"]"##,
    ),
    ("pbs_mpi_mpiexec", "mpi", "scheduler = \"pbs\"\nranks_per_node = 3"),
    (
        "pbs_mpi_mpirun_multinode",
        "mpi",
        r#"scheduler = "pbs"
nodes = 4
ranks_per_node = 8
launcher = "mpirun"
launcher_args = ["--map-by", "ppr:8:node"]"#,
    ),
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Compares with `tests/golden/NAME`; `TAPS_BLESS=1` writes it instead.
fn check_golden(name: &str, text: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("TAPS_BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {} (create it with TAPS_BLESS=1 cargo test --test submit)", path.display(), e));
    assert!(
        text == want,
        "{} differs from the rendered script (check, then TAPS_BLESS=1 to update):\n--- rendered ---\n{}",
        path.display(),
        text
    );
}

/// `bash -n` on a script.
fn check_syntax(script: &str) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), script).unwrap();
    let out = Command::new("bash").arg("-n").arg(tmp.path()).output().unwrap();
    assert!(out.status.success(), "bash -n: {}\n{}", String::from_utf8_lossy(&out.stderr), script);
}

fn render_case(table: &str, executor: &str, template: Option<&str>) -> String {
    let t: toml::Table = toml::from_str(table).unwrap();
    let o = effective_options(Some(&t), &[]).unwrap();
    let spec =
        JobSpec::new(&o, "synthetic", executor, executor == "mpi", Path::new(RUN), Path::new(BIN), &Default::default())
            .unwrap();
    render(&spec, "test", template.unwrap_or(o.scheduler.get().builtin_template())).unwrap()
}

#[test]
fn every_setting_renders_into_golden_scripts_that_bash_accepts() {
    for (name, executor, table) in CASES {
        let script = render_case(table, executor, None);
        check_syntax(&script);
        check_golden(&format!("{}.sh", name), &script);
    }
}

#[test]
fn rendered_scripts_say_what_the_issue_asks_for() {
    // MPI under Slurm: mpirun with recovery by default (srun's PMIx ends the step on a lost rank),
    // rendered from the launch profile, and rank 0's exit status as the job's.
    let s = render_case(CASES[2].2, "mpi", None);
    let launch = format!(
        "mpirun \"${{taps_root_args[@]}}\" \"${{taps_oversubscribe_args[@]}}\" -np 3 {}/taps worker -c {}/config.toml --run-dir {} \
         --status-file {}/.taps-mpi-status",
        BIN, RUN, RUN, RUN
    );
    assert!(s.lines().any(|l| l == launch), "{}", s);
    assert!(s.contains("\nexport OMPI_MCA_orte_enable_recovery=1\n"), "{}", s);
    assert!(s.contains("\nstatus=$?\nrank0=$(tr -d"), "{}", s);
    for line in ["#SBATCH --exclusive", "#SBATCH --overcommit", "#SBATCH --time=00:10:00", "#SBATCH --ntasks=3"] {
        assert!(s.lines().any(|l| l == line), "{} missing:\n{}", line, s);
    }
    assert!(
        s.contains(&format!("#SBATCH --output={}/job.out", RUN))
            && s.contains(&format!("#SBATCH --error={}/job.err", RUN))
    );
    assert!(s.contains("export OMPI_MCA_mpi_yield_when_idle=1"));
    // Not MPI: taps run once, in the prepared directory.
    let s = render_case(CASES[0].2, "thread-pool", None);
    assert!(s.lines().any(|l| l == format!("{}/taps run -c {}/config.toml --run-dir {}", BIN, RUN, RUN)), "{}", s);
    assert!(!s.contains("srun") && !s.contains(" worker "));
    // PBS: select, walltime over a day in hours, the node file for mpiexec.
    let s = render_case(CASES[9].2, "mpi", None);
    assert!(s.contains("#PBS -l select=4:ncpus=8:mpiprocs=8\n"), "{}", s);
    assert!(
        s.contains(&format!(" -np 32 --hostfile \"$PBS_NODEFILE\" --map-by ppr:8:node {}/taps worker -c ", BIN)),
        "{}",
        s
    );
    assert!(s.contains("PBS_NODEFILE=${PBS_NODEFILE:-$(generate_pbs_nodefile)}\n"));
    let s = render_case(CASES[7].2, "thread-pool", None);
    assert!(
        s.contains("#PBS -l place=scatter:excl\n#PBS -l filesystems=home:eagle\n")
            && s.contains("#PBS -q debug-scaling\n")
    );
    // -O is --overcommit too: then --ntasks, which Slurm accepts above the core count.
    let s = render_case("scheduler = \"slurm\"\nnodes = 2\nranks_per_node = 5\ndirectives = [\"-O\"]", "mpi", None);
    assert!(
        s.contains("#SBATCH --nodes=2\n#SBATCH --ntasks=10\n") && !s.contains("#SBATCH --ntasks-per-node"),
        "{}",
        s
    );
    assert!(s.contains(" -np 10 "), "{}", s);
    // srun when asked for, with the profile's arguments.
    let s = render_case(CASES[3].2, "mpi", None);
    assert!(
        s.contains("\nsrun --mpi=pmix --kill-on-bad-exit=0 --ntasks 4 \"${taps_oversubscribe_args[@]}\" --mpi=pmi2 "),
        "{}",
        s
    );
    let s = render_case("scheduler = \"slurm\"\nwalltime = \"1-12:00:00\"", "thread-pool", None);
    assert!(s.contains("#SBATCH --time=36:00:00\n"));
}

#[test]
fn a_custom_template_sees_every_variable() {
    let tmpl = std::fs::read_to_string(golden_dir().join("custom.sh.j2")).unwrap();
    for (name, executor, table) in
        [("custom_slurm_full.sh", "thread-pool", CASES[1].2), ("custom_pbs_mpi.sh", "mpi", CASES[9].2)]
    {
        let script = render_case(table, executor, Some(&tmpl));
        check_syntax(&script);
        check_golden(name, &script);
    }
}

// ---- the CLI ---------------------------------------------------------------------------------

const BENCH: &[&str] = &[
    "--app",
    "synthetic",
    "--app.structure",
    "bag",
    "--app.task-count",
    "4",
    "--app.bag-max-running",
    "2",
    "--engine.executor",
    "thread-pool",
];

fn taps_env(cwd: &Path, args: &[&str], path: Option<&str>) -> Output {
    let mut c = Command::new(taps_bin());
    c.args(args).current_dir(cwd);
    if let Some(p) = path {
        c.env("PATH", p);
    }
    c.output().expect("taps runs")
}

fn submit_args<'a>(flags: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["submit"];
    v.extend_from_slice(flags);
    v.push("--");
    v.extend_from_slice(BENCH);
    v
}

/// The dry-run script with this run's directory and binaries replaced by the golden paths.
fn dry_run(cwd: &Path, args: &[&str]) -> (String, PathBuf) {
    let before = run_dirs(cwd);
    let out = taps(cwd, args);
    assert!(out.status.success(), "{:?}: {}", args, String::from_utf8_lossy(&out.stderr));
    let dir = run_dirs(cwd).into_iter().find(|d| !before.contains(d)).expect("a new run directory");
    let script = std::fs::read_to_string(dir.join("job.sh")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), script, "--dry-run prints the script it wrote");
    let bin = Path::new(taps_bin()).parent().unwrap().display().to_string();
    (script.replace(&dir.display().to_string(), RUN).replace(&bin, BIN), dir)
}

#[test]
fn dry_run_from_flags_or_a_submit_table_writes_the_same_script() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let flags = [
        "--scheduler",
        "slurm",
        "--nodes",
        "2",
        "--ranks-per-node",
        "4",
        "--walltime",
        "1-12:00:00",
        "--partition",
        "compute",
        "--account",
        "proj42",
        "--qos",
        "debug",
        "--job-name",
        "cholesky-scan",
        "--directive",
        "--exclusive",
        "--directive",
        "#SBATCH --mem=0",
        "--directive",
        "#DW jobdw capacity=1GB access_mode=striped type=scratch",
        "--module",
        "openmpi/4.1",
        "--module",
        "PrgEnv-gnu cray-hdf5",
        "--setup",
        "export OMP_NUM_THREADS=1",
        "--setup",
        "ulimit -n 4096",
        "--launcher-arg",
        "--not-used-without-mpi",
        "--dry-run",
    ];
    let (script, dir) = dry_run(d, &submit_args(&flags));
    check_golden("slurm_full.sh", &script);
    // The run directory: config.toml (with the effective [submit] table), job.sh, job.json.
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    names.sort();
    assert_eq!(names, ["config.toml", "job.json", "job.sh"]);
    let job: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("job.json")).unwrap()).unwrap();
    assert_eq!(job["submitted"], false);
    assert_eq!(job["error"], "dry run");
    assert_eq!(job["command"][0], "sbatch");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.join("job.sh")).unwrap().permissions().mode() & 0o111, 0o111);

    // The same from a [submit] table (the config.toml just written is one), CLI flags overriding it.
    let cfg = dir.join("config.toml");
    let (again, _) = dry_run(d, &["submit", "--dry-run", "-c", cfg.to_str().unwrap()]);
    assert_eq!(again, script);
    let (site, _) =
        dry_run(d, &["submit", "--dry-run", "--nodes", "3", "--setup", "echo extra", "-c", cfg.to_str().unwrap()]);
    assert!(site.contains("#SBATCH --nodes=3\n") && site.contains("ulimit -n 4096\necho extra\n"), "{}", site);

    // A dry run is a run directory that was not submitted.
    let out = taps(d, &["status", dir.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "not-submitted: slurm job (dry run)\n");
    let out = taps(d, &["cancel", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was not submitted (dry run); nothing to cancel"));
}

#[test]
fn dry_runs_of_the_example_configs_and_a_custom_template() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let root = env!("CARGO_MANIFEST_DIR");
    let site = format!("{}/slurm/site-example.toml", root);
    let app = format!("{}/apps/synthetic/config.toml", root);
    let (script, _) = dry_run(d, &["submit", "--dry-run", "-c", &app, &site]);
    check_syntax(&script);
    for l in ["#SBATCH --partition=debug", "#SBATCH --ntasks=3", "#SBATCH --overcommit", "export OMP_NUM_THREADS=1"] {
        assert!(script.lines().any(|x| x == l), "{} missing:\n{}", l, script);
    }
    let custom = golden_dir().join("custom.sh.j2");
    let (script, _) = dry_run(
        d,
        &["submit", "--dry-run", "--scheduler", "pbs", "--template", custom.to_str().unwrap(), "--", "-c", &app],
    );
    assert!(script.starts_with("#!/bin/bash\n# custom template\n"), "{}", script);
    assert!(script.contains("# scheduler=pbs job_name=taps-synthetic "));

    // --taps-bin: the job calls taps from there.
    let bin = d.join("site-bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("taps"), "").unwrap();
    let out = taps(d, &submit_args(&["--scheduler", "pbs", "--taps-bin", bin.to_str().unwrap(), "--dry-run"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("\n{}/taps run -c ", bin.display())));
}

#[test]
fn submit_help_lists_every_option() {
    let tmp = tempfile::tempdir().unwrap();
    let out = taps(tmp.path(), &["submit", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for f in taps::submit::FLAGS {
        assert!(help.contains(&format!("  {} ", f.flag)), "{} missing from help", f.flag);
    }
    assert!(help.contains("--dry-run") && help.contains("[submit]") && help.contains("taps status RUN_DIR"));
    assert!(run_dirs(tmp.path()).is_empty());
}

#[test]
fn bad_input_is_one_line_exit_2_and_nothing_created() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let s = |flags: &[&'static str]| submit_args(&[&["--dry-run"], flags].concat());
    assert_bad_input(d, &s(&["--scheduler", "slurm", "--walltime", "1h"]), &["walltime", "HH:MM:SS", "1h"]);
    assert_bad_input(d, &s(&["--scheduler", "slurm", "--walltime", "00:75:00"]), &["walltime", "00:75:00"]);
    assert_bad_input(d, &s(&["--scheduler", "slurm", "--walltime", "00:00:00"]), &["walltime", "longer than 0"]);
    assert_bad_input(d, &s(&["--scheduler", "slurm", "--nodes", "0"]), &["nodes", "at least 1"]);
    assert_bad_input(d, &s(&["--scheduler", "slurm", "--nodes", "-1"]), &["--nodes", "-1", "non-negative integer"]);
    assert_bad_input(d, &s(&["--scheduler", "slurm", "--ranks-per-node", "0"]), &["ranks_per_node", "at least 1"]);
    assert_bad_input(d, &s(&["--scheduler", "lsf"]), &["--scheduler", "lsf", "slurm|pbs"]);
    assert_bad_input(d, &s(&[]), &["no scheduler", "--scheduler slurm|pbs", "[submit]"]);
    assert_bad_input(d, &s(&["--scheduler", "pbs", "--qos", "high"]), &["qos", "Slurm option", "PBS"]);
    assert_bad_input(d, &s(&["--scheduler", "pbs", "--launcher", "srun"]), &["srun needs Slurm", "mpiexec"]);
    assert_bad_input(
        d,
        &s(&["--scheduler", "slurm", "--launcher", "aprun"]),
        &["--launcher", "aprun", "mpiexec, mpirun, srun"],
    );
    assert_bad_input(d, &s(&["--scheduler", "slurm", "--directive", "exclusive"]), &["not a directive", "#SBATCH"]);
    assert_bad_input(
        d,
        &s(&["--scheduler", "slurm", "--directive", "#PBS -q x"]),
        &["is a pbs directive", "scheduler is slurm"],
    );
    assert_bad_input(d, &s(&["--scheduler", "slurm", "--partition", "a b"]), &["partition", "one word"]);
    assert_bad_input(d, &s(&["--scheduler", "pbs", "--job-name", "1st"]), &["job_name", "start with a letter"]);
    assert_bad_input(d, &s(&["--scheduler", "slurm", "--template", "nope.j2"]), &["template", "nope.j2"]);
    assert_bad_input(
        d,
        &s(&["--scheduler", "slurm", "--taps-bin", "/nonexistent"]),
        &["taps not found in /nonexistent"],
    );
    assert_bad_input(d, &s(&["--scheduler", "slurm", "--nodes"]), &["--nodes needs a value"]);
    assert_bad_input(d, &["submit", "--scheduler", "slurm"], &["nothing to submit", "--app NAME"]);
    assert_bad_input(d, &s(&["--scheduler", "slurm", "--run-dir", "x"]), &["--run-dir is for taps run"]);

    // Templates: a syntax error, an unknown variable.
    std::fs::write(d.join("broken.j2"), "#!/bin/bash\n{% if %}\n").unwrap();
    std::fs::write(d.join("typo.j2"), "#!/bin/bash\n{{ run_directory }}\n").unwrap();
    assert_bad_input(d, &s(&["--scheduler", "slurm", "--template", "broken.j2"]), &["broken.j2", "line 2"]);
    assert_bad_input(d, &s(&["--scheduler", "slurm", "--template", "typo.j2"]), &["typo.j2", "undefined"]);

    // A [submit] table: unknown keys with did-you-mean, wrong types.
    std::fs::write(d.join("site.toml"), "[submit]\nscheduler = \"slurm\"\nnode = 2\n").unwrap();
    let with_site = [&["submit", "--dry-run", "-c", "site.toml", "--"], BENCH].concat();
    assert_bad_input(d, &with_site, &["submit.node", "did you mean submit.nodes"]);
    std::fs::write(d.join("site.toml"), "[submit]\nscheduler = \"slurm\"\nmodules = 3\n").unwrap();
    assert_bad_input(d, &with_site, &["submit.modules", "array of strings"]);

    // The benchmark is checked exactly as taps run checks it.
    let mut run = vec!["run"];
    run.extend_from_slice(BENCH);
    run.extend_from_slice(&["--app.task-count", "many"]);
    let from_run = assert_bad_input(d, &run, &["--app.task-count", "many"]);
    let mut sub = vec!["submit", "--scheduler", "slurm", "--dry-run", "--"];
    sub.extend_from_slice(&run[1..]);
    assert_eq!(assert_bad_input(d, &sub, &[]), from_run);

    // A run directory whose path a directive line cannot carry.
    let spaced = d.join("my runs");
    std::fs::create_dir(&spaced).unwrap();
    assert_bad_input(&spaced, &s(&["--scheduler", "slurm"]), &["contains ' '", "letters, digits"]);
    assert!(std::fs::read_dir(&spaced).unwrap().next().is_none());
}

#[test]
fn missing_scheduler_commands_are_one_line_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let empty = d.join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let path = empty.to_str().unwrap();
    for (sched, cmd) in [("slurm", "sbatch"), ("pbs", "qsub")] {
        let out = taps_env(d, &submit_args(&["--scheduler", sched]), Some(path));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}", err);
        assert_eq!(err.lines().count(), 1, "{}", err);
        assert!(err.starts_with(&format!("taps: error: {} not found on PATH: ", cmd)), "{}", err);
        assert!(err.contains("--dry-run"), "{}", err);
        assert!(run_dirs(d).is_empty(), "nothing is created when {} is missing", cmd);
    }
    // Not a run directory of taps submit.
    let out = taps(d, &["status", d.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("job.json"));
}

// ---- PBS Pro, through a test double on PATH ---------------------------------------------------

/// `qsub`, `qstat`, `qdel` that log their arguments (and working directory) to `calls` and answer
/// as PBS Pro 2022 does: `qsub` prints `1234.pbs01` (or rejects the job if `reject` exists),
/// `qstat -f -F json -x` prints the JSON of the state in `state` ("Q", "R", "F 0", "unknown", ...)
/// with the `comment` in `comment`, if any.
struct PbsDouble {
    dir: tempfile::TempDir,
}

impl PbsDouble {
    fn new() -> PbsDouble {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let qsub = format!(
            r#"#!/bin/sh
echo "qsub $* [cwd=$(pwd)]" >> {d}/calls
if [ -f {d}/reject ]; then echo "qsub: Unknown queue" >&2; exit 170; fi
echo 1234.pbs01
"#
        );
        let qstat = format!(
            r#"#!/bin/sh
echo "qstat $*" >> {d}/calls
set -- $(cat {d}/state)
if [ "$1" = unknown ]; then echo "qstat: Unknown Job Id 1234.pbs01" >&2; exit 153; fi
exit_status=""
if [ -n "${{2:-}}" ]; then exit_status=", \"Exit_status\":$2"; fi
comment=""
if [ -f {d}/comment ]; then comment=", \"comment\":\"$(cat {d}/comment)\""; fi
cat <<EOF
{{
    "timestamp":1767312000,
    "pbs_version":"2022.1.1.20220926110806",
    "pbs_server":"pbs01",
    "Jobs":{{
        "1234.pbs01":{{
            "Job_Name":"taps-synthetic",
            "job_state":"$1",
            "queue":"workq"$exit_status$comment
        }}
    }}
}}
EOF
"#
        );
        let qdel = format!("#!/bin/sh\necho \"qdel $*\" >> {d}/calls\n");
        use std::os::unix::fs::PermissionsExt;
        for (name, text) in [("qsub", qsub), ("qstat", qstat), ("qdel", qdel)] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(dir.path().join("state"), "Q").unwrap();
        PbsDouble { dir }
    }

    fn path(&self) -> String {
        format!("{}:{}", self.dir.path().display(), std::env::var("PATH").unwrap_or_default())
    }

    fn set_state(&self, s: &str) {
        std::fs::write(self.dir.path().join("state"), s).unwrap();
    }

    /// The scheduler's `comment` on the job (PBS Pro's scheduler says why a job waits there).
    fn set_comment(&self, c: &str) {
        std::fs::write(self.dir.path().join("comment"), c).unwrap();
    }

    /// Calls so far, then forgets them.
    fn take_calls(&self) -> Vec<String> {
        let p = self.dir.path().join("calls");
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let _ = std::fs::remove_file(&p);
        text.lines().map(String::from).collect()
    }
}

fn status_of(cwd: &Path, run: &Path, path: &str) -> String {
    let out = taps_env(cwd, &["status", run.to_str().unwrap()], Some(path));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

#[test]
fn pbs_pro_double_submit_status_and_cancel() {
    let pbs = PbsDouble::new();
    let path = pbs.path();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let out =
        taps_env(d, &submit_args(&["--scheduler", "pbs", "--queue", "workq", "--account", "proj42"]), Some(&path));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Submitted pbs job 1234.pbs01\n"));
    let run = run_dirs(d).pop().unwrap();
    let r = run.display();
    assert_eq!(pbs.take_calls(), [format!("qsub -o {r}/job.out -e {r}/job.err {r}/job.sh [cwd={r}]")]);
    let job: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("job.json")).unwrap()).unwrap();
    assert_eq!(
        (job["scheduler"].as_str(), job["submitted"].as_bool(), job["job_id"].as_str()),
        (Some("pbs"), Some(true), Some("1234.pbs01"))
    );
    assert_eq!(
        job["command"],
        serde_json::json!(["qsub", "-o", format!("{r}/job.out"), "-e", format!("{r}/job.err"), format!("{r}/job.sh")])
    );
    assert!(job["submit_time"].as_f64().unwrap() > 1.7e9);
    let script = std::fs::read_to_string(run.join("job.sh")).unwrap();
    assert!(script.contains("#PBS -q workq\n#PBS -A proj42\n"), "{}", script);

    for (state, want) in [
        ("Q", "queued: pbs job 1234.pbs01 (job_state=Q)"),
        ("H", "queued: pbs job 1234.pbs01 (job_state=H)"),
        ("R", "running: pbs job 1234.pbs01 (job_state=R)"),
        ("E", "running: pbs job 1234.pbs01 (job_state=E)"),
        ("F 0", "finished: pbs job 1234.pbs01 (job_state=F Exit_status=0)"),
        ("F 2", "failed: pbs job 1234.pbs01 (job_state=F Exit_status=2)"),
        ("unknown", "unknown: pbs job 1234.pbs01 (the scheduler no longer knows the job and it wrote no job.exit)"),
    ] {
        pbs.set_state(state);
        assert_eq!(status_of(d, &run, &path), want);
        assert_eq!(pbs.take_calls(), ["qstat -f -F json -x 1234.pbs01"]);
    }
    // JSON status.
    pbs.set_state("R");
    let out = taps_env(d, &["status", "--json", run.to_str().unwrap()], Some(&path));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((st["state"].as_str(), st["job_id"].as_str()), (Some("running"), Some("1234.pbs01")));
    pbs.take_calls();

    // Cancel a running job: qdel, then PBS reports it finished by a signal (256 + 15).
    let out = taps_env(d, &["cancel", run.to_str().unwrap()], Some(&path));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pbs.take_calls(), ["qstat -f -F json -x 1234.pbs01", "qdel 1234.pbs01"]);
    let job: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("job.json")).unwrap()).unwrap();
    assert!(job["cancel_time"].as_f64().is_some());
    pbs.set_state("F 271");
    assert_eq!(status_of(d, &run, &path), "cancelled: pbs job 1234.pbs01 (job_state=F Exit_status=271)");
    pbs.take_calls();
    // Cancelling a finished job does nothing.
    let out = taps_env(d, &["cancel", run.to_str().unwrap()], Some(&path));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already cancelled; nothing to cancel"));
    assert_eq!(pbs.take_calls(), ["qstat -f -F json -x 1234.pbs01"]);

    // The job's own exit code answers once PBS has forgotten the job.
    pbs.set_state("unknown");
    std::fs::write(run.join("job.exit"), "0\n").unwrap();
    assert_eq!(
        status_of(d, &run, &path),
        "finished: pbs job 1234.pbs01 (no longer known to the scheduler, job.exit 0)"
    );
}

#[test]
fn a_rejected_submission_shows_the_schedulers_message_and_marks_the_run() {
    let pbs = PbsDouble::new();
    std::fs::write(pbs.dir.path().join("reject"), "").unwrap();
    let path = pbs.path();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let out = taps_env(d, &submit_args(&["--scheduler", "pbs", "--queue", "nosuch"]), Some(&path));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", err);
    assert_eq!(err.lines().count(), 1, "{}", err);
    assert!(err.contains("qsub rejected the job") && err.contains("qsub: Unknown queue"), "{}", err);
    assert!(out.stdout.is_empty());
    let run = run_dirs(d).pop().expect("the run directory is kept");
    let job: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("job.json")).unwrap()).unwrap();
    assert_eq!(job["submitted"], false);
    assert!(job["error"].as_str().unwrap().contains("Unknown queue"));
    assert!(job.get("job_id").is_none());
    assert!(status_of(d, &run, &path).starts_with("not-submitted: pbs job (qsub rejected the job"));
    pbs.take_calls();
    let out = taps_env(d, &["cancel", run.to_str().unwrap()], Some(&path));
    assert_eq!(out.status.code(), Some(1));
    assert!(pbs.take_calls().is_empty(), "nothing to cancel, nothing asked");
}

#[test]
fn pbs_status_says_a_job_is_stuck_and_why() {
    let pbs = PbsDouble::new();
    let path = pbs.path();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let out = taps_env(d, &submit_args(&["--scheduler", "pbs", "--ranks-per-node", "64"]), Some(&path));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = run_dirs(d).pop().unwrap();
    pbs.set_state("Q");
    // An ordinary wait, in PBS Pro's words.
    pbs.set_comment("Not Running: Insufficient amount of resource: ncpus (R: 64 A: 2 T: 2)");
    assert_eq!(
        status_of(d, &run, &path),
        "queued: pbs job 1234.pbs01 (waiting: Insufficient amount of resource: ncpus (R: 64 A: 2 T: 2); job_state=Q)"
    );
    // A job the queue can never hold: stuck, why, and what to do.
    pbs.set_comment("Can Never Run: Insufficient amount of queue resource: ncpus (R: 64 A: 32 T: 32)");
    assert_eq!(
        status_of(d, &run, &path),
        format!(
            "stuck: pbs job 1234.pbs01 (can never start: Insufficient amount of queue resource: ncpus (R: 64 A: 32 T: 32); \
         cancel it (taps cancel {}) and submit again asking for less (fewer --nodes or --ranks-per-node, a \
         shorter --walltime) or to another --queue; job_state=Q)",
            run.display()
        )
    );
    let out = taps_env(d, &["status", "--json", run.to_str().unwrap()], Some(&path));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["state"], "stuck");
    pbs.take_calls();
    // A stuck job has not ended: taps cancel cancels it.
    let out = taps_env(d, &["cancel", run.to_str().unwrap()], Some(&path));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pbs.take_calls(), ["qstat -f -F json -x 1234.pbs01", "qdel 1234.pbs01"]);
}

// ---- values rendered into job.sh: refused, or quoted so that they run nothing -------------------

/// Shell that tries to create `canary`, in every form a value could smuggle it in.
fn hostile(canary: &Path) -> Vec<String> {
    let c = canary.display();
    vec![
        format!("foo; touch {c}"),
        format!("$(touch {c})"),
        format!("`touch {c}`"),
        format!("x && touch {c}"),
        format!("x | touch {c}"),
        format!("x\ntouch {c}"),
        format!("x' ; touch {c} ; '"),
    ]
}

#[test]
fn values_that_could_run_shell_in_job_sh_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let canary = d.join("canary");
    for v in hostile(&canary) {
        for sched in ["slurm", "pbs"] {
            for (flag, needle) in [
                ("--module", "letters, digits and ._+/@-"),
                ("--job-name", "one word of letters, digits and ._-+@%:=,/"),
                ("--partition", "one word"),
                ("--account", "one word"),
                ("--qos", if sched == "pbs" { "qos" } else { "one word" }),
                ("--walltime", "HH:MM:SS"),
            ] {
                assert_bad_input(d, &submit_args(&["--scheduler", sched, flag, &v, "--dry-run"]), &[needle]);
            }
        }
    }
    let two_lines = format!("--exclusive\ntouch {}", canary.display());
    assert_bad_input(d, &submit_args(&["--scheduler", "slurm", "--directive", &two_lines]), &["several lines"]);
    assert_bad_input(d, &submit_args(&["--scheduler", "slurm", "--directive", "--x\u{1b}"]), &["control character"]);
    assert!(!canary.exists());
    // Module lists stay valid: several names, versions, spack-style specs.
    let out = taps(d, &submit_args(&["--scheduler", "slurm", "--module", "PrgEnv-gnu  cray-hdf5", "--dry-run"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\nmodule load PrgEnv-gnu cray-hdf5 || exit 1\n"));
    let out = taps(d, &submit_args(&["--scheduler", "pbs", "--module", "gcc@12.2.0+cuda/x_y.z", "--dry-run"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A stand-in for a program the job script calls: writes its path and arguments, one a line, to
/// `log`, and exit status 0 as rank 0's to the file after `--status-file`, if any.
fn recorder(path: &Path, log: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let status = "while [ $# -gt 0 ]; do [ \"$1\" = --status-file ] && echo 0 > \"$2\"; shift; done\n";
    std::fs::write(path, format!("#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" > '{}'\n{}", log.display(), status)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn paths_and_launcher_arguments_reach_the_launch_literally() {
    // Run the dry-run job.sh with bash, as the scheduler would, with srun/mpiexec and taps
    // replaced by recorders: every value arrives as one literal word and no canary appears.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let canary = d.join("canary");
    let c = canary.display();
    let log = d.join("argv");
    // A directory name holds no `/`: this canary lands in the job's working directory (the run's).
    let bin = d.join("bin $(touch canary); `touch canary` '\" x");
    std::fs::create_dir(&bin).unwrap();
    let launchers = d.join("launchers");
    std::fs::create_dir(&launchers).unwrap();
    for p in [bin.join("taps"), bin.join("taps-worker"), launchers.join("mpirun"), launchers.join("mpiexec")] {
        recorder(&p, &log);
    }
    let arg = format!("$(touch {c}); `touch {c}`' \"x && touch {c}");
    let path = format!("{}:{}", launchers.display(), std::env::var("PATH").unwrap_or_default());
    let b = bin.to_str().unwrap();
    let mpi_bench = [&BENCH[..BENCH.len() - 1], &["mpi"]].concat();
    for (sched, executor) in [("slurm", "thread-pool"), ("slurm", "mpi"), ("pbs", "mpi")] {
        let mut args = vec!["submit", "--scheduler", sched, "--taps-bin", b, "--dry-run"];
        if executor == "mpi" {
            args.extend(["--ranks-per-node", "2", "--launcher-arg", &arg, "--"]);
            args.extend(&mpi_bench);
        } else {
            args.push("--");
            args.extend(BENCH);
        }
        let before = run_dirs(d);
        let out = taps(d, &args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let run = run_dirs(d).into_iter().find(|r| !before.contains(r)).unwrap();
        let r = run.display().to_string();
        let job = Command::new("bash")
            .arg(run.join("job.sh"))
            .current_dir(d)
            .env("PATH", &path)
            .env("PBS_NODEFILE", d.join("nodefile"))
            .output()
            .unwrap();
        assert!(job.status.success(), "{}", String::from_utf8_lossy(&job.stderr));
        assert_eq!(std::fs::read_to_string(run.join("job.exit")).unwrap(), "0\n");
        let argv: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(String::from).collect();
        let program = |name: &str| format!("{}/{}", b, name);
        let want: Vec<String> = match (sched, executor) {
            ("slurm", "thread-pool") => vec![program("taps"), "run".into()],
            // SAFETY: geteuid has no preconditions.
            ("slurm", _) => [format!("{}/mpirun", launchers.display())]
                .into_iter()
                .chain((unsafe { libc::geteuid() } == 0).then(|| "--allow-run-as-root".to_string()))
                .chain(["-np".into(), "2".into(), arg.clone(), program("taps"), "worker".into()])
                .collect(),
            _ => vec![
                format!("{}/mpiexec", launchers.display()),
                "-n".into(),
                "2".into(),
                "--hostfile".into(),
                d.join("nodefile").display().to_string(),
                arg.clone(),
                program("taps"),
                "worker".into(),
            ],
        };
        let mut want = want;
        want.extend(["-c".into(), format!("{}/config.toml", r), "--run-dir".into(), r.clone()]);
        if executor == "mpi" {
            want.extend(["--status-file".into(), format!("{}/.taps-mpi-status", r)]);
        }
        assert_eq!(argv, want, "{} {}", sched, executor);
        for c in [&canary, &run.join("canary")] {
            assert!(!c.exists(), "{} {}: the job script ran a value as shell", sched, executor);
        }
    }
}

#[test]
fn a_job_script_bash_cannot_parse_fails_the_dry_run() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for line in ["echo \"unclosed", "cat <<EOF", "if true; then", "echo $(", "fi", "done"] {
        for sched in ["slurm", "pbs"] {
            let quoted = format!("{:?}", line);
            assert_bad_input(
                d,
                &submit_args(&["--scheduler", sched, "--setup", line, "--dry-run"]),
                &["submit.setup (--setup)", &quoted, "bash -n says"],
            );
        }
    }
    // A construct over several setup lines is whole.
    let ok = d.join("ok");
    std::fs::create_dir(&ok).unwrap();
    let out = taps(
        &ok,
        &submit_args(&[
            "--scheduler",
            "slurm",
            "--setup",
            "if true; then",
            "--setup",
            "ulimit -n 4096",
            "--setup",
            "fi",
            "--dry-run",
        ]),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A template whose shell is broken.
    std::fs::write(d.join("broken.sh.j2"), "#!/bin/bash\n{{ launch }} )\n").unwrap();
    assert_bad_input(
        d,
        &submit_args(&["--scheduler", "slurm", "--template", "broken.sh.j2", "--dry-run"]),
        &["the job script would not run", "bash -n says", "--template"],
    );
}

#[test]
fn an_mpi_job_of_one_rank_is_refused_at_submit() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mpi = [
        "--app",
        "synthetic",
        "--app.structure",
        "bag",
        "--app.task-count",
        "4",
        "--app.bag-max-running",
        "2",
        "--engine.executor",
        "mpi",
    ];
    for sched in ["slurm", "pbs"] {
        let args = [&["submit", "--scheduler", sched, "--dry-run", "--"][..], &mpi].concat();
        assert_bad_input(
            d,
            &args,
            &["mpi executor needs at least 2 ranks", "--nodes 1 x --ranks-per-node 1", "--ranks-per-node 2"],
        );
    }
    // Two nodes of one rank each are two ranks.
    let args = [&["submit", "--scheduler", "slurm", "--nodes", "2", "--dry-run", "--"][..], &mpi].concat();
    let out = taps(d, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

// ---- a whole sweep as one job: taps submit [SUBMIT OPTIONS] sweep SWEEP-ARGUMENTS ---------------

/// A tiny synthetic base config for sweeps, in `d`.
fn sweep_base(d: &Path) -> PathBuf {
    let base = d.join("base.toml");
    std::fs::write(&base, "[app]\nname = \"synthetic\"\nstructure = \"bag\"\ntask_count = 3\nbag_max_running = 2\n")
        .unwrap();
    base
}

/// `taps submit FLAGS sweep -c BASE SWEEP` in `d`.
fn submit_sweep_args<'a>(flags: &[&'a str], base: &'a str, sweep: &[&'a str]) -> Vec<&'a str> {
    [&["submit"], flags, &["sweep", "-c", base], sweep].concat()
}

/// The job script's one line that runs taps.
fn sweep_lines(script: &str) -> Vec<&str> {
    script.lines().filter(|l| !l.starts_with('#') && (l.contains("/taps sweep ") || l.contains("/taps run "))).collect()
}

#[test]
fn a_sweep_is_one_job_running_taps_sweep_once_for_slurm_and_pbs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let base = sweep_base(d);
    let b = base.to_str().unwrap();
    let bin = Path::new(taps_bin()).parent().unwrap().display().to_string();
    let vary = ["--vary", "engine.executor=thread-pool,process-pool,mpi", "--vary", "app.task_count=2,3"];
    for (sched, flags) in [
        ("slurm", &["--ranks-per-node", "3", "--directive", "--exclusive", "--directive", "--overcommit"][..]),
        (
            "pbs",
            &["--nodes", "2", "--ranks-per-node", "2", "--launcher-arg", "--bind-to", "--launcher-arg", "none"][..],
        ),
    ] {
        let out_dir = d.join(format!("sweep-{}", sched));
        let o = out_dir.to_str().unwrap();
        let flags = [&["--scheduler", sched, "--walltime", "00:10:00", "--dry-run"], flags].concat();
        let out = taps(d, &submit_sweep_args(&flags, b, &[&vary[..], &["--repeat", "2", "--out", o]].concat()));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let script = std::fs::read_to_string(out_dir.join("job.sh")).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), script, "--dry-run prints the script it wrote");
        check_syntax(&script);
        let lines = sweep_lines(&script);
        assert_eq!(lines.len(), 1, "one taps line, run once on the first node (no mpirun/srun around it):\n{}", script);
        // It runs where taps submit ran: the sweep's relative paths resolve there.
        let cd = format!("{{ cd {} 2>/dev/null || ", d.display());
        assert!(lines[0].starts_with(&cd), "{}", lines[0]);
        assert!(lines[0].contains(&format!("}}; }} && {}/taps sweep -c {} --vary ", bin, b)), "{}", lines[0]);
        let golden = script
            .replace(o, RUN)
            .replace(b, "/home/alice/base.toml")
            .replace(&bin, BIN)
            .replace(&d.display().to_string(), "/home/alice");
        check_golden(&format!("{}_sweep.sh", sched), &golden);
        let mut names: Vec<String> =
            std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        assert_eq!(names, ["cells", "job.json", "job.sh", "sweep.json"]);
        let job: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("job.json")).unwrap()).unwrap();
        assert_eq!((job["run_dir"].as_str(), job["error"].as_str()), (Some(o), Some("dry run")));
        let st = taps(d, &["status", o]);
        assert_eq!(String::from_utf8_lossy(&st.stdout), format!("not-submitted: {} job (dry run)\n", sched));
        // The sweep records the job's ranks for its MPI cells: a plain taps sweep does not resume it.
        assert_bad_input(
            d,
            &[&["sweep", "-c", b], &vary[..], &["--repeat", "2", "--out", o]].concat(),
            &["holds a different sweep", "made for a batch job (--mpi-ranks ", "submitting it again with taps submit"],
        );
    }
    let slurm = std::fs::read_to_string(d.join("sweep-slurm/job.sh")).unwrap();
    for l in ["#SBATCH --job-name=taps-sweep", "#SBATCH --ntasks=3", "#SBATCH --exclusive", "#SBATCH --overcommit"] {
        assert!(slurm.lines().any(|x| x == l), "{} missing:\n{}", l, slurm);
    }
    let tail = format!(" --repeat 2 --out {}/sweep-slurm --mpi-ranks 3 --mpi-launcher mpirun", d.display());
    assert!(sweep_lines(&slurm)[0].ends_with(&tail), "{}", slurm);
    let pbs = std::fs::read_to_string(d.join("sweep-pbs/job.sh")).unwrap();
    for l in ["#PBS -N taps-sweep", "#PBS -l select=2:ncpus=2:mpiprocs=2", "#PBS -l walltime=00:10:00"] {
        assert!(pbs.lines().any(|x| x == l), "{} missing:\n{}", l, pbs);
    }
    // The MPI cells get PBS's host file, quoted when the job runs, and the --launcher-arg words.
    assert!(pbs.contains("PBS_NODEFILE=${PBS_NODEFILE:-$(generate_pbs_nodefile)}\n"), "{}", pbs);
    assert!(
        sweep_lines(&pbs)[0].ends_with(
            " --mpi-ranks 4 --mpi-launcher mpiexec --mpi-launcher-args \"--hostfile $(printf %q \"$PBS_NODEFILE\")\"' --bind-to none'"
        ),
        "{}",
        pbs
    );
    // Without an MPI cell, no MPI settings.
    let o = d.join("plain");
    let out = taps(
        d,
        &submit_sweep_args(
            &["--scheduler", "slurm", "--dry-run"],
            b,
            &["--vary", "app.task_count=1,2", "--out", o.to_str().unwrap()],
        ),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let script = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(sweep_lines(&script)[0].ends_with(&format!("--repeat 1 --out {}", o.display())), "{}", script);
    assert!(!script.contains("PBS_NODEFILE") && !script.contains("--mpi-"));
}

#[test]
fn bad_sweep_input_is_one_line_exit_2_and_nothing_created_or_submitted() {
    let pbs = PbsDouble::new();
    let path = pbs.path();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let base = sweep_base(d);
    let b = base.to_str().unwrap();
    let bad = |flags: &[&str], sweep: &[&str], needles: &[&str]| {
        let out_dir = d.join("never");
        let args = submit_sweep_args(flags, b, &[sweep, &["--out", out_dir.to_str().unwrap()]].concat());
        let out = taps_env(d, &args, Some(&path));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{:?}: {}", args, err);
        assert_eq!(err.lines().count(), 1, "{}", err);
        assert!(err.starts_with("taps: error: "), "{}", err);
        for n in needles {
            assert!(err.contains(n), "{:?} should mention {:?}", err, n);
        }
        assert!(!out_dir.exists(), "{:?} created the sweep directory", args);
        assert!(pbs.take_calls().is_empty(), "{:?} called the scheduler", args);
    };
    let pbs3 = ["--scheduler", "pbs", "--ranks-per-node", "3"];
    bad(&pbs3, &["--vary", "app.nosuch=1,2"], &["cell app.nosuch=1", "unknown option app.nosuch", "task_count"]);
    bad(&pbs3, &["--vary", "app.task_count=2,x"], &["cell app.task_count=x", "non-negative integer"]);
    bad(&pbs3, &["--vary", "app.task_count=2,,3"], &["--vary app.task_count=2,,3", "an empty value"]);
    bad(
        &pbs3,
        &["--vary", "executor=mpi", "--vary", "engine.executor.ranks=3,4"],
        &["engine.executor.ranks=4", "more than the 3 rank(s) of the batch job"],
    );
    bad(
        &["--scheduler", "pbs"],
        &["--vary", "executor=thread-pool,mpi"],
        &["cell engine.executor=mpi_r1", "at least 2 ranks", "--ranks-per-node 2"],
    );
    bad(&pbs3, &["--vary", "submit.nodes=1,2"], &["--vary submit.nodes=1,2", "flags of taps submit"]);
    bad(&pbs3, &["--mpi-ranks", "3"], &["--mpi-ranks is set by taps submit"]);
    bad(&pbs3, &["--bogus"], &["--bogus", "taps sweep --help"]);
    bad(&["--scheduler", "pbs", "--walltime", "1h"], &[], &["walltime", "HH:MM:SS"]);
    bad(&["--ranks-per-node", "3"], &[], &["no scheduler", "--scheduler slurm|pbs"]);
    // A directory that holds something else, or another sweep, is left as it is.
    let other = d.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let out = taps_env(d, &submit_sweep_args(&pbs3, b, &["--out", other.to_str().unwrap()]), Some(&path));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no sweep"));
    let names: Vec<_> = std::fs::read_dir(&other).unwrap().collect();
    assert_eq!(names.len(), 1);
    assert!(pbs.take_calls().is_empty());
}

#[test]
fn pbs_double_submits_a_sweep_refuses_a_second_job_while_it_runs_and_resumes() {
    let pbs = PbsDouble::new();
    let path = pbs.path();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let base = sweep_base(d);
    let out_dir = d.join("sweep");
    let o = out_dir.to_str().unwrap();
    let executors = if cfg!(feature = "mpi") { "thread-pool,process-pool,mpi" } else { "thread-pool,process-pool" };
    let vary = format!("engine.executor={}", executors);
    let args = submit_sweep_args(
        &["--scheduler", "pbs", "--ranks-per-node", "3"],
        base.to_str().unwrap(),
        &["--vary", &vary, "--out", o],
    );
    let out = taps_env(d, &args, Some(&path));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Submitted pbs job 1234.pbs01\nSweep directory: {o}\nCheck it with: taps status {o}\n")
    );
    assert_eq!(pbs.take_calls(), [format!("qsub -o {o}/job.out -e {o}/job.err {o}/job.sh [cwd={o}]")]);
    assert_eq!(status_of(d, &out_dir, &path), "queued: pbs job 1234.pbs01 (job_state=Q)");
    pbs.take_calls();

    // Two jobs must not run one sweep.
    let out = taps_env(d, &args, Some(&path));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", err);
    assert!(err.contains("its pbs job 1234.pbs01 is queued") && err.contains("taps cancel"), "{}", err);
    assert_eq!(pbs.take_calls(), ["qstat -f -F json -x 1234.pbs01"], "nothing submitted");

    // The job runs (here: its script, as PBS would run it, with a host file of 3 slots).
    let nodefile = d.join("nodefile");
    std::fs::write(&nodefile, "localhost\nlocalhost\nlocalhost\n").unwrap();
    pbs.set_state("R");
    let run = Command::new("bash")
        .arg(out_dir.join("job.sh"))
        .env("PBS_NODEFILE", &nodefile)
        .env("PATH", &path)
        .stdout(std::fs::File::create(out_dir.join("job.out")).unwrap())
        .stderr(std::fs::File::create(out_dir.join("job.err")).unwrap())
        .status()
        .unwrap();
    let job_err = std::fs::read_to_string(out_dir.join("job.err")).unwrap();
    assert!(run.success(), "job.err:\n{}", job_err);
    pbs.set_state("F 0");
    assert_eq!(status_of(d, &out_dir, &path), "finished: pbs job 1234.pbs01 (job_state=F Exit_status=0)");
    let job_out = std::fs::read_to_string(out_dir.join("job.out")).unwrap();
    let n = executors.split(',').count();
    assert!(job_out.contains(&format!("Sweep of {n} cell(s) in {o}: {n} ok, 0 failed")), "{}", job_out);
    for ex in executors.split(',') {
        let recs = records(&out_dir.join(format!("cells/engine.executor={}_r1", ex)));
        check_record_invariants(&recs);
        assert_eq!(recs.len(), 3, "{}", ex);
        assert!(recs.iter().all(|r| r.success == Some(true)), "{}", ex);
    }
    if cfg!(feature = "mpi") {
        let cfg = std::fs::read_to_string(out_dir.join("cells/engine.executor=mpi_r1/config.toml")).unwrap();
        assert!(cfg.contains("ranks = 3\n") && cfg.contains("launcher = \"mpiexec\"\n"), "{}", cfg);
        assert!(cfg.contains(&format!("launcher_args = \"--hostfile {}\"", nodefile.display())), "{}", cfg);
    }

    // Submitted again: a new job, the finished cells skipped, the old job's exit code gone.
    pbs.take_calls();
    let out = taps_env(d, &args, Some(&path));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!out_dir.join("job.exit").exists(), "the earlier job's exit code would answer for the new job");
    pbs.set_state("Q");
    assert_eq!(status_of(d, &out_dir, &path), "queued: pbs job 1234.pbs01 (job_state=Q)");
    let first = out_dir.join(format!("cells/engine.executor={}_r1/tasks.jsonl", "thread-pool"));
    let mtime = std::fs::metadata(&first).unwrap().modified().unwrap();
    let run = Command::new("bash")
        .arg(out_dir.join("job.sh"))
        .env("PBS_NODEFILE", &nodefile)
        .env("PATH", &path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{}", err);
    assert!(err.contains(&format!("resuming: {n} of {n} cell(s) already finished, skipped")), "{}", err);
    assert_eq!(std::fs::metadata(&first).unwrap().modified().unwrap(), mtime, "a finished cell ran again");
}

#[test]
fn a_submitted_sweeps_relative_paths_resolve_where_taps_submit_ran() {
    // base.toml names its input relative to the directory taps submit runs in; the job runs in the
    // sweep directory, and must read the same input (as `taps run` would from there).
    let pbs = PbsDouble::new();
    let path = pbs.path();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let corpus = d.join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    std::fs::write(corpus.join("a.txt"), "alpha beta alpha\n").unwrap();
    std::fs::write(d.join("base.toml"), "[app]\nname = \"mapreduce\"\ndata_dir = \"corpus\"\nmap_tasks = 1\n").unwrap();
    let out_dir = d.join("sweep");
    let o = out_dir.to_str().unwrap();
    let args = submit_sweep_args(
        &["--scheduler", "pbs"],
        "base.toml",
        &["--vary", "engine.executor=thread-pool,process-pool", "--out", o],
    );
    let out = taps_env(d, &args, Some(&path));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = Command::new("bash").arg(out_dir.join("job.sh")).env("PATH", &path).current_dir("/").output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{}", err);
    for ex in ["thread-pool", "process-pool"] {
        let cell = out_dir.join(format!("cells/engine.executor={}_r1", ex));
        let counts = std::fs::read_to_string(cell.join("counts.csv")).unwrap();
        assert!(counts.contains("alpha,2"), "{}: {}", ex, counts);
        let cfg = std::fs::read_to_string(cell.join("config.toml")).unwrap();
        assert!(cfg.contains(&format!("data_dir = \"{}\"", corpus.display())), "{}", cfg);
    }

    // The directory taps submit ran in is gone when the job starts: one line says so.
    let moved = tmp.path().join("moved");
    std::fs::create_dir(&moved).unwrap();
    let gone = d.join("gone");
    std::fs::create_dir(&gone).unwrap();
    std::fs::rename(d.join("base.toml"), gone.join("base.toml")).unwrap();
    std::fs::rename(&corpus, gone.join("corpus")).unwrap();
    let out2 = moved.join("sweep");
    let o2 = out2.to_str().unwrap();
    let args = submit_sweep_args(&["--scheduler", "pbs"], "base.toml", &["--vary", "app.map_tasks=1", "--out", o2]);
    let out = taps_env(&gone, &args, Some(&path));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&gone).unwrap();
    let run = Command::new("bash").arg(out2.join("job.sh")).env("PATH", &path).output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{}", err);
    assert!(err.contains(&format!("taps: error: cannot enter {}", gone.display())), "{}", err);
    assert_eq!(std::fs::read_to_string(out2.join("job.exit")).unwrap().trim(), "1");
}
