//! Launch profiles: the one table of how the ranks of an MPI job of taps workers start
//! (`mpirun`, `mpiexec`, `srun`, and profiles of the user's own), as a command-line template per
//! launcher. `taps run --engine.executor mpi` runs a profile's [`command`](Profile::command) from
//! here ([`super::mpi`]); `taps submit` puts its [`script`](Profile::script) rendering into the job
//! script, where whether the job runs as root and has more ranks than cores is decided when it runs.
//!
//! The built-in profiles ([`BUILTIN`]) can be overridden or extended, by name, with TOML files of
//! the same shape: `$XDG_CONFIG_HOME/taps/launchers.toml` (default `~/.config/taps/launchers.toml`),
//! or the file given by `engine.executor.launcher-profile`. A profile is a table:
//!
//! ```toml
//! [mpirun]
//! program = "mpirun"
//! args = ["{root_args}", "{oversubscribe_args}", "-np", "{ranks}", "{env_args}", "{launcher_args}", "{worker}", "{worker_args}"]
//! root_args = ["--allow-run-as-root"]          # spliced in when running as root
//! oversubscribe_args = ["--oversubscribe"]     # spliced in when ranks > slots (hostfile, else cores)
//! env_args = ["-x", "{name}"]                  # per variable of run.env_vars, spliced in as {env_args}
//! env = { OMPI_MCA_orte_enable_recovery = "1" }            # always set for the launcher
//! root_env = {}                                             # set when running as root
//! oversubscribe_env = { OMPI_MCA_mpi_yield_when_idle = "1" }  # set when oversubscribed
//! hint = "install OpenMPI: ..."                # shown when the program is missing
//! ```
//!
//! Placeholders in `args`: `{ranks}` (total ranks, driver included), `{worker}` (the program each
//! rank runs: taps-worker, or taps), `{config}` and `{run_dir}` (paths), and the list placeholders
//! `{launcher_args}` (engine.executor.launcher-args, split like a shell), `{worker_args}` (what the
//! worker needs, starting with `worker` so that `{worker}` may be `taps` or `taps-worker`:
//! `-c CONFIG --run-dir DIR --status-file FILE`), `{root_args}`, `{oversubscribe_args}`,
//! `{env_args}`, each of which must be a whole argument and expands to zero or more arguments.
//!
//! ```
//! use taps::launchers::profiles::{Profiles, LaunchSpec};
//! let p = Profiles::builtin().get("mpirun").unwrap().clone();
//! let spec = LaunchSpec { ranks: 3, worker: "/bin/taps-worker".into(), config: "/r/config.toml".into(),
//!     run_dir: "/r".into(), status_file: "/r/.s".into(), launcher_args: vec!["--bind-to".into(), "none".into()],
//!     root: false, oversubscribed: true, ..Default::default() };
//! let cmd = p.command(&spec).unwrap();
//! assert_eq!(cmd.program, "mpirun");
//! assert_eq!(cmd.args[..4], ["--oversubscribe", "-np", "3", "--bind-to"]);
//! assert_eq!(cmd.env.get("OMPI_MCA_mpi_yield_when_idle").map(String::as_str), Some("1"));
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::shell::{self, quote};

/// The built-in profiles (TOML).
pub(crate) const BUILTIN: &str = r#"
# OpenMPI's mpirun. Recovery keeps the job alive when a worker rank dies (taps records its task
# as failed and goes on with the other ranks); mpirun then exits 0 whatever the ranks return, so
# taps reads rank 0's exit status from the run directory instead. -x passes run.env_vars to the
# ranks on other nodes too.
[mpirun]
program = "mpirun"
args = ["{root_args}", "{oversubscribe_args}", "-np", "{ranks}", "{env_args}", "{launcher_args}", "{worker}", "{worker_args}"]
root_args = ["--allow-run-as-root"]
oversubscribe_args = ["--oversubscribe"]
env_args = ["-x", "{name}"]
env = { OMPI_MCA_orte_enable_recovery = "1" }
oversubscribe_env = { OMPI_MCA_mpi_yield_when_idle = "1" }
hint = "install OpenMPI (scripts/install-deps.sh, or apt-get install openmpi-bin libopenmpi-dev; on a cluster: module load openmpi)"

# mpiexec (OpenMPI's is mpirun; the OMPI_* variables are ignored by other MPIs, and MPICH's
# mpiexec, which passes every variable on by itself, wants a profile of your own without -x).
[mpiexec]
program = "mpiexec"
args = ["-n", "{ranks}", "{env_args}", "{launcher_args}", "{worker}", "{worker_args}"]
env_args = ["-x", "{name}"]
env = { OMPI_MCA_orte_enable_recovery = "1" }
root_env = { OMPI_ALLOW_RUN_AS_ROOT = "1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM = "1" }
oversubscribe_env = { OMPI_MCA_rmaps_base_oversubscribe = "1", OMPI_MCA_mpi_yield_when_idle = "1" }
hint = "install OpenMPI (scripts/install-deps.sh, or apt-get install openmpi-bin libopenmpi-dev; on a cluster: module load openmpi)"

# Slurm's srun, inside an allocation (it passes every variable on). OpenMPI needs PMIx
# (--mpi=pmix); with MPICH use launcher-args "--mpi=pmi2" (a later --mpi wins). Slurm's PMIx
# plugin ends the whole step when one rank dies, --kill-on-bad-exit=0 notwithstanding: under
# srun a lost rank ends the job (mpirun recovers).
[srun]
program = "srun"
args = ["--mpi=pmix", "--kill-on-bad-exit=0", "--ntasks", "{ranks}", "{oversubscribe_args}", "{launcher_args}", "{worker}", "{worker_args}"]
oversubscribe_args = ["--overcommit"]
oversubscribe_env = { OMPI_MCA_mpi_yield_when_idle = "1" }
hint = "srun comes with Slurm: run inside an allocation on a Slurm cluster (salloc), or start the local test cluster with slurm/up.sh (scripts/install-deps.sh installs Slurm)"
"#;

/// Where rank 0 writes its exit status, in the run directory (the launcher removes it once read).
pub(crate) const STATUS_FILE: &str = ".taps-mpi-status";
/// Length of the blank status record the launcher creates, which rank 0 overwrites in place
/// (the MPI executor's `STATUS_LEN`): the exit code, padded with blanks, and a newline.
pub(crate) const STATUS_LEN: usize = 16;

/// What goes wrong with a launch profile or a launch.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A profile file or a profile in it is malformed (the message names file, profile and problem).
    #[error("{0}")]
    BadProfile(String),
    /// A profile file cannot be read.
    #[error("cannot read launch profiles {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No profile of that name.
    #[error("unknown launcher {name:?}{suggestion}; known launch profiles: {known} (add your own in {user_file})")]
    UnknownLauncher {
        /// The name asked for.
        name: String,
        /// ` (did you mean "x"?)` or empty.
        suggestion: String,
        /// The known names, comma separated.
        known: String,
        /// The user's profile file.
        user_file: String,
    },
    /// A program is not on PATH.
    #[error("{program} not found on PATH{hint}")]
    Missing {
        /// The program.
        program: String,
        /// `: how to get it`, or empty.
        hint: String,
    },
    /// `engine.executor.launcher_args` does not split into words.
    #[error("engine.executor.launcher_args: {0}")]
    LauncherArgs(#[from] shell::SplitError),
    /// The probe of a launch command: the launcher rejects it, or does not finish.
    #[error("{what}: {problem}")]
    Probe {
        /// What the user wrote that was probed.
        what: String,
        /// What the launcher said.
        problem: String,
    },
    /// The taps worker program cannot be found.
    #[error("{0}")]
    Worker(String),
    /// The launcher (or another program) cannot be started.
    #[error("cannot start {program}: {source}")]
    Start {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// An I/O error around the launch (the status file, waiting for the launcher).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One launcher's command-line template.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The launcher program (a name looked up on PATH, or a path).
    pub program: String,
    /// Arguments with placeholders.
    pub args: Vec<String>,
    /// `{root_args}`: arguments added when running as root.
    #[serde(default)]
    pub root_args: Vec<String>,
    /// `{oversubscribe_args}`: arguments added when there are more ranks than cores.
    #[serde(default)]
    pub oversubscribe_args: Vec<String>,
    /// `{env_args}`: arguments added per variable the ranks must see (placeholder `{name}`).
    #[serde(default)]
    pub env_args: Vec<String>,
    /// Environment of the launcher.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment added when running as root.
    #[serde(default)]
    pub root_env: BTreeMap<String, String>,
    /// Environment added when oversubscribed.
    #[serde(default)]
    pub oversubscribe_env: BTreeMap<String, String>,
    /// How to get the program, shown when it is missing.
    #[serde(default)]
    pub hint: String,
}

/// What a launch needs to fill in a profile.
#[derive(Clone, Debug, Default)]
pub struct LaunchSpec {
    /// Total ranks (rank 0 is the driver).
    pub ranks: u64,
    /// The program every rank runs (taps-worker, or taps).
    pub worker: PathBuf,
    /// The run's config.toml.
    pub config: PathBuf,
    /// The run directory.
    pub run_dir: PathBuf,
    /// Where rank 0 writes its exit status.
    pub status_file: PathBuf,
    /// Extra launcher arguments (already split).
    pub launcher_args: Vec<String>,
    /// Variables every rank must see (`run.env_vars`): in the launcher's environment, and
    /// passed on by the profile's `env_args`.
    pub env: BTreeMap<String, String>,
    /// Running as root (a job script decides it when it runs).
    pub root: bool,
    /// More ranks than cores on this node (a job script decides it when it runs).
    pub oversubscribed: bool,
}

/// A launcher command, ready to run.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchCommand {
    /// Program.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment variables to set.
    pub env: BTreeMap<String, String>,
}

impl std::fmt::Display for LaunchCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (k, v) in &self.env {
            write!(f, "{}={} ", k, quote(v))?;
        }
        write!(f, "{}", quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", quote(a))?;
        }
        Ok(())
    }
}

/// A profile rendered into a job script: shell lines before the launch, the launch command line,
/// and shell lines after `status=$?` that replace the launcher's exit status with rank 0's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScriptLaunch {
    /// Lines before the launch (the launcher's environment, root and oversubscription checks,
    /// the run's variables, the blank status file); each ends with a newline.
    pub setup: String,
    /// The launch command, one line, quoted for the shell.
    pub command: String,
    /// Lines after `status=$?` (each ends with a newline).
    pub status: String,
}

const SCALARS: &[&str] = &["ranks", "worker", "config", "run_dir"];
const LISTS: &[&str] = &["launcher_args", "worker_args", "root_args", "oversubscribe_args", "env_args"];
/// The shell arrays a job script fills when it runs as root / with more ranks than cores.
const ROOT_ARRAY: &str = "taps_root_args";
const OVER_ARRAY: &str = "taps_oversubscribe_args";

/// One argument of a rendered profile: a word, or a word for the shell as it is (job scripts).
enum Arg {
    Word(String),
    Raw(String),
}

impl Profile {
    /// Checks the placeholders of `args` and `env_args`; the error names the problem.
    pub fn check(&self) -> Result<(), String> {
        if self.program.trim().is_empty() {
            return Err("program is empty".into());
        }
        for a in &self.args {
            for key in placeholders(a)? {
                if LISTS.contains(&key) && a != &format!("{{{}}}", key) {
                    return Err(format!("{{{}}} must be a whole argument (it expands to several), in {:?}", key, a));
                }
                if !LISTS.contains(&key) && !SCALARS.contains(&key) {
                    return Err(format!(
                        "unknown placeholder {{{}}} in {:?}; allowed: {}",
                        key,
                        a,
                        SCALARS.iter().chain(LISTS).map(|k| format!("{{{}}}", k)).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        for a in &self.env_args {
            if let Some(key) = placeholders(a)?.into_iter().find(|k| *k != "name") {
                return Err(format!("unknown placeholder {{{}}} in env_args {:?}; allowed: {{name}}", key, a));
            }
        }
        if !self.args.iter().any(|a| a == "{worker}") {
            return Err("args must contain \"{worker}\"".into());
        }
        if !self.args.iter().any(|a| a == "{worker_args}") {
            return Err("args must contain \"{worker_args}\"".into());
        }
        Ok(())
    }

    /// The command for `spec`, to run from here.
    pub fn command(&self, spec: &LaunchSpec) -> Result<LaunchCommand, LaunchError> {
        self.render(spec, &worker_args(spec), &[])
    }

    /// The command for `spec` with no worker arguments and no variables: `spec.worker` is a
    /// stand-in (such as `true`) that checks the launcher accepts the rest.
    pub(crate) fn probe_command(&self, spec: &LaunchSpec) -> Result<LaunchCommand, LaunchError> {
        let spec = LaunchSpec { env: BTreeMap::new(), ..spec.clone() };
        self.render(&spec, &[], &[])
    }

    fn render(&self, spec: &LaunchSpec, worker_args: &[String], raw: &[&str]) -> Result<LaunchCommand, LaunchError> {
        let args = self
            .expand(spec, worker_args, raw, false)?
            .into_iter()
            .map(|a| match a {
                Arg::Word(w) | Arg::Raw(w) => w,
            })
            .collect();
        let mut env = self.env.clone();
        if spec.root {
            env.extend(self.root_env.clone());
        }
        if spec.oversubscribed {
            env.extend(self.oversubscribe_env.clone());
        }
        env.extend(spec.env.clone());
        Ok(LaunchCommand { program: self.program.clone(), args, env })
    }

    /// The arguments for `spec`; in a job script (`script`), root and oversubscription
    /// arguments are the shell arrays the script fills when it runs, and the words in `raw` of
    /// `launcher_args` go to the shell as they are.
    fn expand(
        &self,
        spec: &LaunchSpec,
        worker_args: &[String],
        raw: &[&str],
        script: bool,
    ) -> Result<Vec<Arg>, LaunchError> {
        self.check().map_err(LaunchError::BadProfile)?;
        let words = |l: &[String]| l.iter().map(|w| Arg::Word(w.clone())).collect::<Vec<_>>();
        let array = |name: &str, l: &[String]| {
            if l.is_empty() { vec![] } else { vec![Arg::Raw(format!("\"${{{}[@]}}\"", name))] }
        };
        let mut args = Vec::new();
        for a in &self.args {
            match a.as_str() {
                "{launcher_args}" => args.extend(
                    spec.launcher_args
                        .iter()
                        .map(|w| if raw.contains(&w.as_str()) { Arg::Raw(w.clone()) } else { Arg::Word(w.clone()) }),
                ),
                "{worker_args}" => args.extend(words(worker_args)),
                "{env_args}" => {
                    for name in spec.env.keys() {
                        args.extend(self.env_args.iter().map(|e| Arg::Word(e.replace("{name}", name))));
                    }
                }
                "{root_args}" if script => args.extend(array(ROOT_ARRAY, &self.root_args)),
                "{root_args}" => args.extend(words(if spec.root { &self.root_args } else { &[] })),
                "{oversubscribe_args}" if script => args.extend(array(OVER_ARRAY, &self.oversubscribe_args)),
                "{oversubscribe_args}" => {
                    args.extend(words(if spec.oversubscribed { &self.oversubscribe_args } else { &[] }))
                }
                _ => args.push(Arg::Word(
                    a.replace("{ranks}", &spec.ranks.to_string())
                        .replace("{worker}", &spec.worker.display().to_string())
                        .replace("{config}", &spec.config.display().to_string())
                        .replace("{run_dir}", &spec.run_dir.display().to_string()),
                )),
            }
        }
        Ok(args)
    }

    /// The profile in a job script that starts `spec.ranks` ranks, `ranks_per_node` on each
    /// node: whether it runs as root and has more ranks per node than cores (`nproc`) is decided
    /// by the script when it runs; words of `spec.launcher_args` listed in `raw` (such as
    /// `"$PBS_NODEFILE"`) go to the shell unquoted. After the launch, `$status` becomes rank 0's
    /// exit status (the launcher's when rank 0 wrote none and the launcher failed).
    pub fn script(&self, spec: &LaunchSpec, ranks_per_node: u32, raw: &[&str]) -> Result<ScriptLaunch, LaunchError> {
        let words = |l: &[String]| l.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
        let exports = |env: &BTreeMap<String, String>, indent: &str| {
            env.iter().map(|(k, v)| format!("{}export {}={}\n", indent, k, quote(v))).collect::<String>()
        };
        let mut setup = format!("# Launch profile: {} ", self.program);
        setup.push_str("(launchers/profiles.rs; the same as taps run --engine.executor mpi uses).\n");
        setup.push_str(&exports(&self.env, ""));
        if !self.root_args.is_empty() || !self.root_env.is_empty() {
            if !self.root_args.is_empty() {
                let _ = writeln!(setup, "{}=()", ROOT_ARRAY);
            }
            setup.push_str("if [ \"$(id -u)\" = 0 ]; then\n");
            if !self.root_args.is_empty() {
                let _ = writeln!(setup, "  {}=({})", ROOT_ARRAY, words(&self.root_args));
            }
            setup.push_str(&exports(&self.root_env, "  "));
            setup.push_str("fi\n");
        }
        if !self.oversubscribe_args.is_empty() || !self.oversubscribe_env.is_empty() {
            setup.push_str(
                "# More ranks than cores: idle OpenMPI ranks must yield the CPU, else they crawl (~1000x slower).\n",
            );
            if !self.oversubscribe_args.is_empty() {
                let _ = writeln!(setup, "{}=()", OVER_ARRAY);
            }
            let _ = writeln!(setup, "if [ \"$(nproc)\" -lt {} ]; then", ranks_per_node);
            if !self.oversubscribe_args.is_empty() {
                let _ = writeln!(setup, "  {}=({})", OVER_ARRAY, words(&self.oversubscribe_args));
            }
            setup.push_str(&exports(&self.oversubscribe_env, "  "));
            setup.push_str("fi\n");
        }
        if !spec.env.is_empty() {
            setup.push_str("# run.env_vars, for every rank.\n");
            setup.push_str(&exports(&spec.env, ""));
        }
        let status_file = quote(&spec.status_file.display().to_string());
        setup.push_str(
            "# Rank 0 writes its exit status here: mpirun with recovery exits 0 whatever the ranks return.\n",
        );
        let _ = writeln!(setup, "printf '%{}s\\n' '' > {}", STATUS_LEN - 1, status_file);

        let mut command = quote(&self.program);
        for a in self.expand(spec, &worker_args(spec), raw, true)? {
            command.push(' ');
            match a {
                Arg::Word(w) => command.push_str(&quote(&w)),
                Arg::Raw(w) => command.push_str(&w),
            }
        }
        let status = format!(
            "rank0=$(tr -d ' \\n' < {f} 2>/dev/null)\n\
             rm -f {f}\n\
             if [ -n \"$rank0\" ]; then\n  status=$rank0\n\
             elif [ \"$status\" = 0 ]; then\n  \
             echo \"taps: rank 0 of the MPI job left no exit status ({p} ended with 0): it was killed, or it never started\" >&2\n  \
             status=1\n\
             fi\n",
            f = status_file,
            p = self.program
        );
        Ok(ScriptLaunch { setup, command, status })
    }

    /// The program's full path, or an error naming it with the install hint.
    pub(crate) fn locate(&self) -> Result<PathBuf, LaunchError> {
        shell::find_program(&self.program).ok_or_else(|| LaunchError::Missing {
            program: self.program.clone(),
            hint: if self.hint.is_empty() { String::new() } else { format!(": {}", self.hint) },
        })
    }
}

/// What `taps-worker` (or `taps worker`) needs: `worker -c CONFIG --run-dir DIR --status-file FILE`.
fn worker_args(spec: &LaunchSpec) -> Vec<String> {
    vec![
        crate::worker::WORKER_COMMAND.to_string(),
        "-c".to_string(),
        spec.config.display().to_string(),
        "--run-dir".to_string(),
        spec.run_dir.display().to_string(),
        "--status-file".to_string(),
        spec.status_file.display().to_string(),
    ]
}

fn placeholders(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let j = after.find('}').ok_or_else(|| format!("unclosed '{{' in {:?}", s))?;
        out.push(&after[..j]);
        rest = &after[j + 1..];
    }
    Ok(out)
}

/// Launch profiles by name.
#[derive(Clone, Debug, Default)]
pub struct Profiles(BTreeMap<String, Profile>);

impl Profiles {
    /// The built-in profiles.
    pub fn builtin() -> Profiles {
        Profiles::parse(BUILTIN, "built-in launch profiles").expect("built-in launch profiles are valid")
    }

    /// Profiles from TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Profiles, LaunchError> {
        let map: BTreeMap<String, Profile> =
            toml::from_str(text).map_err(|e| LaunchError::BadProfile(format!("{}: {}", origin, e.message().trim())))?;
        for (name, p) in &map {
            p.check().map_err(|e| LaunchError::BadProfile(format!("{}: launch profile {:?}: {}", origin, name, e)))?;
        }
        Ok(Profiles(map))
    }

    /// Reads a profile file.
    pub fn read(path: &Path) -> Result<Profiles, LaunchError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| LaunchError::Read { path: path.to_path_buf(), source })?;
        Profiles::parse(&text, &path.display().to_string())
    }

    /// Adds or replaces profiles by name.
    pub fn extend(&mut self, other: Profiles) {
        self.0.extend(other.0);
    }

    /// A profile by name.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.0.get(name)
    }

    /// Profile names.
    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    /// Built-ins, then the user file (if present), then `extra` (if given).
    pub fn load(extra: Option<&Path>) -> Result<Profiles, LaunchError> {
        let mut p = Profiles::builtin();
        if let Some(user) = user_file().filter(|f| f.is_file()) {
            p.extend(Profiles::read(&user)?);
        }
        if let Some(f) = extra {
            p.extend(Profiles::read(f)?);
        }
        Ok(p)
    }

    /// The profile `name`, or an error listing the known ones.
    pub fn find(&self, name: &str) -> Result<&Profile, LaunchError> {
        self.get(name).ok_or_else(|| LaunchError::UnknownLauncher {
            name: name.to_string(),
            suggestion: crate::options::did_you_mean(name, self.names())
                .map(|s| format!(" (did you mean {:?}?)", s))
                .unwrap_or_default(),
            known: self.names().join(", "),
            user_file: user_file()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "~/.config/taps/launchers.toml".into()),
        })
    }
}

/// The user's profile file: `$XDG_CONFIG_HOME/taps/launchers.toml`, else `~/.config/taps/launchers.toml`.
pub(crate) fn user_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("taps").join("launchers.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(root: bool, over: bool) -> LaunchSpec {
        LaunchSpec {
            ranks: 4,
            worker: "/w".into(),
            config: "/r/config.toml".into(),
            run_dir: "/r".into(),
            status_file: "/r/.s".into(),
            launcher_args: vec!["-x".into(), "A=1".into()],
            env: BTreeMap::new(),
            root,
            oversubscribed: over,
        }
    }

    #[test]
    fn builtin_profiles_render() {
        let p = Profiles::builtin();
        assert_eq!(p.names(), ["mpiexec", "mpirun", "srun"]);
        let c = p.get("mpirun").unwrap().command(&spec(true, false)).unwrap();
        assert_eq!(
            c.args,
            [
                "--allow-run-as-root",
                "-np",
                "4",
                "-x",
                "A=1",
                "/w",
                "worker",
                "-c",
                "/r/config.toml",
                "--run-dir",
                "/r",
                "--status-file",
                "/r/.s"
            ]
        );
        assert!(!c.env.contains_key("OMPI_MCA_mpi_yield_when_idle"));
        assert_eq!(c.env["OMPI_MCA_orte_enable_recovery"], "1");
        let c = p.get("srun").unwrap().command(&spec(false, true)).unwrap();
        assert_eq!(c.args[..5], ["--mpi=pmix", "--kill-on-bad-exit=0", "--ntasks", "4", "--overcommit"]);
        assert_eq!(c.env["OMPI_MCA_mpi_yield_when_idle"], "1");
        let c = p.get("mpiexec").unwrap().command(&spec(true, true)).unwrap();
        assert_eq!(c.env["OMPI_ALLOW_RUN_AS_ROOT"], "1");
        assert!(c.to_string().starts_with("OMPI_ALLOW_RUN_AS_ROOT=1 "), "{}", c);
    }

    #[test]
    fn the_runs_variables_reach_the_launcher_and_are_passed_on_by_name() {
        let p = Profiles::builtin();
        let mut s = spec(false, false);
        s.env = [("B".to_string(), "x y".to_string()), ("A".to_string(), "1".to_string())].into();
        let c = p.get("mpirun").unwrap().command(&s).unwrap();
        assert_eq!(c.args[..6], ["-np", "4", "-x", "A", "-x", "B"]);
        assert_eq!((c.env["A"].as_str(), c.env["B"].as_str()), ("1", "x y"));
        // srun passes every variable on by itself.
        let c = p.get("srun").unwrap().command(&s).unwrap();
        assert!(!c.args.contains(&"B".to_string()) && c.env["B"] == "x y", "{:?}", c);
        // A probe runs `true`: no variables.
        let c = p.get("mpirun").unwrap().probe_command(&s).unwrap();
        assert!(!c.env.contains_key("A") && !c.args.contains(&"A".to_string()), "{:?}", c);
    }

    #[test]
    fn a_probe_command_has_the_stand_in_and_no_worker_arguments() {
        let p = Profiles::builtin();
        let mut s = spec(true, false);
        s.worker = "/bin/true".into();
        let c = p.get("mpirun").unwrap().probe_command(&s).unwrap();
        assert_eq!(c.args, ["--allow-run-as-root", "-np", "4", "-x", "A=1", "/bin/true"]);
        assert_eq!(c.env["OMPI_MCA_orte_enable_recovery"], "1");
    }

    #[test]
    fn a_job_script_decides_root_and_oversubscription_when_it_runs() {
        let p = Profiles::builtin();
        let mut s = spec(false, false);
        s.launcher_args = vec!["--hostfile".into(), "\"$PBS_NODEFILE\"".into()];
        s.env = [("A".to_string(), "x y".to_string())].into();
        let l = p.get("mpirun").unwrap().script(&s, 3, &["\"$PBS_NODEFILE\""]).unwrap();
        assert_eq!(
            l.command,
            "mpirun \"${taps_root_args[@]}\" \"${taps_oversubscribe_args[@]}\" -np 4 -x A --hostfile \"$PBS_NODEFILE\" \
             /w worker -c /r/config.toml --run-dir /r --status-file /r/.s"
        );
        for line in [
            "export OMPI_MCA_orte_enable_recovery=1",
            "taps_root_args=()",
            "if [ \"$(id -u)\" = 0 ]; then",
            "  taps_root_args=(--allow-run-as-root)",
            "if [ \"$(nproc)\" -lt 3 ]; then",
            "  taps_oversubscribe_args=(--oversubscribe)",
            "  export OMPI_MCA_mpi_yield_when_idle=1",
            "export A='x y'",
            "printf '%15s\\n' '' > /r/.s",
        ] {
            assert!(l.setup.lines().any(|l| l == line), "{:?} not in\n{}", line, l.setup);
        }
        assert!(l.status.contains("status=$rank0"), "{}", l.status);
        // Without root or oversubscription arguments, no arrays.
        let l = p.get("mpiexec").unwrap().script(&s, 3, &[]).unwrap();
        assert!(!l.command.contains("${") && l.setup.contains("  export OMPI_ALLOW_RUN_AS_ROOT=1\n"), "{:?}", l);
        assert!(l.command.contains("'\"$PBS_NODEFILE\"'"), "not raw: quoted {}", l.command);
    }

    #[test]
    fn user_profiles_override_and_are_checked() {
        let mut p = Profiles::builtin();
        p.extend(
            Profiles::parse(
                "[mine]\nprogram = \"/opt/x/mpirun\"\nargs = [\"-n\", \"{ranks}\", \"{worker}\", \"{worker_args}\"]\n",
                "f",
            )
            .unwrap(),
        );
        assert!(p.get("mine").is_some());
        let e = Profiles::parse("[a]\nprogram = \"x\"\nargs = [\"{worker}\", \"{worker_args}\", \"{rank}\"]\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown placeholder {rank}") && e.contains("{ranks}"), "{}", e);
        let e = Profiles::parse("[a]\nprogram = \"x\"\nargs = [\"{worker}\", \"--x={worker_args}\"]\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("whole argument"), "{}", e);
        let e = Profiles::parse(
            "[a]\nprogram = \"x\"\nargs = [\"{worker}\", \"{worker_args}\"]\nenv_args = [\"{nam}\"]\n",
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("{nam}") && e.contains("{name}"), "{}", e);
        let e = Profiles::parse("[a]\nprogram = \"x\"\nargs = []\nextra = 1\n", "f").unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{}", e);
        let e = p.find("mpirn").unwrap_err().to_string();
        assert!(e.contains("did you mean \"mpirun\""), "{}", e);
    }

    #[cfg(feature = "mpi")]
    #[test]
    fn the_blank_status_record_is_as_long_as_rank_0_writes_it() {
        assert_eq!(STATUS_LEN, crate::executor::mpi::launch::STATUS_LEN);
    }
}
