//! Launch profiles: how `taps run --engine.executor mpi` starts an MPI job of `taps-worker`
//! ranks from an interactive node (`mpirun`, `mpiexec`, `srun`), as a command-line template per
//! launcher.
//!
//! The built-in profiles ([`BUILTIN`]) can be overridden or extended, by name, with TOML files of
//! the same shape: `$XDG_CONFIG_HOME/taps/launchers.toml` (default `~/.config/taps/launchers.toml`),
//! or the file given by `engine.executor.launcher-profile`. A profile is a table:
//!
//! ```toml
//! [mpirun]
//! program = "mpirun"
//! args = ["{root_args}", "{oversubscribe_args}", "-np", "{ranks}", "{launcher_args}", "{worker}", "{worker_args}"]
//! root_args = ["--allow-run-as-root"]          # spliced in when running as root
//! oversubscribe_args = ["--oversubscribe"]     # spliced in when ranks > cores of this node
//! env = { OMPI_MCA_orte_enable_recovery = "1" }            # always set for the launcher
//! root_env = {}                                             # set when running as root
//! oversubscribe_env = { OMPI_MCA_mpi_yield_when_idle = "1" }  # set when oversubscribed
//! hint = "install OpenMPI: ..."                # shown when the program is missing
//! ```
//!
//! Placeholders in `args`: `{ranks}` (total ranks, driver included), `{worker}` (the taps-worker
//! binary), `{config}` and `{run_dir}` (paths), and the list placeholders `{launcher_args}`
//! (engine.executor.launcher-args, split like a shell), `{worker_args}` (what taps-worker needs,
//! starting with `worker` so that `{worker}` may be `taps` or `taps-worker`:
//! `-c CONFIG --run-dir DIR --status-file FILE`), `{root_args}`, `{oversubscribe_args}`, each of
//! which must be a whole argument and expands to zero or more arguments.
//!
//! ```
//! use taps::launchers::profiles::{Profiles, LaunchSpec};
//! let p = Profiles::builtin().get("mpirun").unwrap().clone();
//! let spec = LaunchSpec { ranks: 3, worker: "/bin/taps-worker".into(), config: "/r/config.toml".into(),
//!     run_dir: "/r".into(), status_file: "/r/.s".into(), launcher_args: vec!["--bind-to".into(), "none".into()],
//!     root: false, oversubscribed: true };
//! let cmd = p.command(&spec).unwrap();
//! assert_eq!(cmd.program, "mpirun");
//! assert_eq!(cmd.args[..4], ["--oversubscribe", "-np", "3", "--bind-to"]);
//! assert_eq!(cmd.env.get("OMPI_MCA_mpi_yield_when_idle").map(String::as_str), Some("1"));
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The built-in profiles (TOML).
pub const BUILTIN: &str = r#"
# OpenMPI's mpirun. Recovery keeps the job alive when a worker rank dies (taps records its task
# as failed and goes on with the other ranks); mpirun then exits 0 whatever the ranks return, so
# taps reads rank 0's exit status from the run directory instead.
[mpirun]
program = "mpirun"
args = ["{root_args}", "{oversubscribe_args}", "-np", "{ranks}", "{launcher_args}", "{worker}", "{worker_args}"]
root_args = ["--allow-run-as-root"]
oversubscribe_args = ["--oversubscribe"]
env = { OMPI_MCA_orte_enable_recovery = "1" }
oversubscribe_env = { OMPI_MCA_mpi_yield_when_idle = "1" }
hint = "install OpenMPI (scripts/install-deps.sh, or apt-get install openmpi-bin libopenmpi-dev; on a cluster: module load openmpi)"

# mpiexec (OpenMPI's is mpirun; the OMPI_* variables are ignored by other MPIs).
[mpiexec]
program = "mpiexec"
args = ["-n", "{ranks}", "{launcher_args}", "{worker}", "{worker_args}"]
env = { OMPI_MCA_orte_enable_recovery = "1" }
root_env = { OMPI_ALLOW_RUN_AS_ROOT = "1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM = "1" }
oversubscribe_env = { OMPI_MCA_rmaps_base_oversubscribe = "1", OMPI_MCA_mpi_yield_when_idle = "1" }
hint = "install OpenMPI (scripts/install-deps.sh, or apt-get install openmpi-bin libopenmpi-dev; on a cluster: module load openmpi)"

# Slurm's srun, inside an allocation. OpenMPI needs PMIx (--mpi=pmix); with MPICH use
# launcher-args "--mpi=pmi2" in a profile of your own.
[srun]
program = "srun"
args = ["--mpi=pmix", "--kill-on-bad-exit=0", "--ntasks", "{ranks}", "{oversubscribe_args}", "{launcher_args}", "{worker}", "{worker_args}"]
oversubscribe_args = ["--overcommit"]
oversubscribe_env = { OMPI_MCA_mpi_yield_when_idle = "1" }
hint = "srun comes with Slurm: run inside an allocation on a Slurm cluster (salloc), or start the local test cluster with slurm/up.sh (scripts/install-deps.sh installs Slurm)"
"#;

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
    pub ranks: usize,
    /// The taps-worker binary.
    pub worker: PathBuf,
    /// The run's config.toml.
    pub config: PathBuf,
    /// The run directory.
    pub run_dir: PathBuf,
    /// Where rank 0 writes its exit status.
    pub status_file: PathBuf,
    /// Extra launcher arguments (already split).
    pub launcher_args: Vec<String>,
    /// Running as root.
    pub root: bool,
    /// More ranks than cores on this node.
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
            write!(f, "{}={} ", k, shell_quote(v))?;
        }
        write!(f, "{}", shell_quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", shell_quote(a))?;
        }
        Ok(())
    }
}

const SCALARS: &[&str] = &["ranks", "worker", "config", "run_dir"];
const LISTS: &[&str] = &["launcher_args", "worker_args", "root_args", "oversubscribe_args"];

impl Profile {
    /// Checks the placeholders of `args`; the error names the profile's problem.
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
        if !self.args.iter().any(|a| a == "{worker}") {
            return Err("args must contain \"{worker}\"".into());
        }
        if !self.args.iter().any(|a| a == "{worker_args}") {
            return Err("args must contain \"{worker_args}\"".into());
        }
        Ok(())
    }

    /// The command for `spec`.
    pub fn command(&self, spec: &LaunchSpec) -> Result<LaunchCommand, String> {
        let worker_args = vec![
            crate::worker::WORKER_COMMAND.to_string(),
            "-c".to_string(),
            spec.config.display().to_string(),
            "--run-dir".to_string(),
            spec.run_dir.display().to_string(),
            "--status-file".to_string(),
            spec.status_file.display().to_string(),
        ];
        self.render(spec, &worker_args)
    }

    /// The command for `spec` with no worker arguments: `spec.worker` is a stand-in (such as
    /// `true`) that checks the launcher accepts the rest.
    pub fn probe_command(&self, spec: &LaunchSpec) -> Result<LaunchCommand, String> {
        self.render(spec, &[])
    }

    fn render(&self, spec: &LaunchSpec, worker_args: &[String]) -> Result<LaunchCommand, String> {
        self.check()?;
        let mut args = Vec::new();
        for a in &self.args {
            let list: Option<&[String]> = match a.as_str() {
                "{launcher_args}" => Some(&spec.launcher_args),
                "{worker_args}" => Some(worker_args),
                "{root_args}" => Some(if spec.root { &self.root_args } else { &[] }),
                "{oversubscribe_args}" => Some(if spec.oversubscribed { &self.oversubscribe_args } else { &[] }),
                _ => None,
            };
            match list {
                Some(l) => args.extend(l.iter().cloned()),
                None => args.push(
                    a.replace("{ranks}", &spec.ranks.to_string())
                        .replace("{worker}", &spec.worker.display().to_string())
                        .replace("{config}", &spec.config.display().to_string())
                        .replace("{run_dir}", &spec.run_dir.display().to_string()),
                ),
            }
        }
        let mut env = self.env.clone();
        if spec.root {
            env.extend(self.root_env.clone());
        }
        if spec.oversubscribed {
            env.extend(self.oversubscribe_env.clone());
        }
        Ok(LaunchCommand { program: self.program.clone(), args, env })
    }

    /// The program's full path, or one line naming it with the install hint.
    pub fn locate(&self) -> Result<PathBuf, String> {
        find_program(&self.program).ok_or_else(|| {
            let mut m = format!("{} not found on PATH", self.program);
            if !self.hint.is_empty() {
                m.push_str(&format!(": {}", self.hint));
            }
            m
        })
    }
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

/// A program by name on PATH (or a path containing '/'), if it is an executable file.
pub fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let ok = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let p = PathBuf::from(program);
        return ok(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| ok(p))
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
    pub fn parse(text: &str, origin: &str) -> Result<Profiles, String> {
        let map: BTreeMap<String, Profile> =
            toml::from_str(text).map_err(|e| format!("{}: {}", origin, e.message().trim()))?;
        for (name, p) in &map {
            p.check().map_err(|e| format!("{}: launch profile {:?}: {}", origin, name, e))?;
        }
        Ok(Profiles(map))
    }

    /// Reads a profile file.
    pub fn read(path: &Path) -> Result<Profiles, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read launch profiles {}: {}", path.display(), e))?;
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
    pub fn load(extra: Option<&Path>) -> Result<Profiles, String> {
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
    pub fn find(&self, name: &str) -> Result<&Profile, String> {
        self.get(name).ok_or_else(|| {
            let mut m = format!("unknown launcher {:?}", name);
            if let Some(s) = crate::options::did_you_mean(name, self.names()) {
                m.push_str(&format!(" (did you mean {:?}?)", s));
            }
            m.push_str(&format!(
                "; known launch profiles: {} (add your own in {})",
                self.names().join(", "),
                user_file().map(|f| f.display().to_string()).unwrap_or_else(|| "~/.config/taps/launchers.toml".into())
            ));
            m
        })
    }
}

/// The user's profile file: `$XDG_CONFIG_HOME/taps/launchers.toml`, else `~/.config/taps/launchers.toml`.
pub fn user_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("taps").join("launchers.toml"))
}

/// Splits a string like a POSIX shell (whitespace, single and double quotes, backslash).
pub fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unclosed ' in {:?}", s)),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(format!("unclosed \" in {:?}", s)),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unclosed \" in {:?}", s)),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err(format!("trailing backslash in {:?}", s)),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

pub use super::profile::shell_quote;

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
    fn a_probe_command_has_the_stand_in_and_no_worker_arguments() {
        let p = Profiles::builtin();
        let mut s = spec(true, false);
        s.worker = "/bin/true".into();
        let c = p.get("mpirun").unwrap().probe_command(&s).unwrap();
        assert_eq!(c.args, ["--allow-run-as-root", "-np", "4", "-x", "A=1", "/bin/true"]);
        assert_eq!(c.env["OMPI_MCA_orte_enable_recovery"], "1");
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
            .unwrap_err();
        assert!(e.contains("unknown placeholder {rank}") && e.contains("{ranks}"), "{}", e);
        let e =
            Profiles::parse("[a]\nprogram = \"x\"\nargs = [\"{worker}\", \"--x={worker_args}\"]\n", "f").unwrap_err();
        assert!(e.contains("whole argument"), "{}", e);
        let e = Profiles::parse("[a]\nprogram = \"x\"\nargs = []\nextra = 1\n", "f").unwrap_err();
        assert!(e.contains("unknown field"), "{}", e);
        let e = p.find("mpirn").unwrap_err();
        assert!(e.contains("did you mean \"mpirun\""), "{}", e);
    }

    #[test]
    fn args_split_like_a_shell() {
        assert_eq!(
            split_args("  --bind-to none -x 'A=b c' \"d\\\"e\" f\\ g ").unwrap(),
            ["--bind-to", "none", "-x", "A=b c", "d\"e", "f g"]
        );
        assert!(split_args("'open").is_err());
        assert_eq!(split_args("").unwrap(), Vec::<String>::new());
        assert_eq!(shell_quote("a b"), "'a b'");
    }
}
