//! Launch profiles: the command line that starts `nodes × ranks_per_node` copies of a program
//! under `srun`, `mpirun` or `mpiexec`. Used by `taps submit` for the job body; the MPI executor
//! can use the same table to start its own ranks.
//!
//! ```
//! use taps::launchers::profile::{LaunchSpec, Launcher};
//! let spec = LaunchSpec::new(2, 3, vec!["taps-worker".into(), "-c".into(), "config.toml".into()]);
//! assert_eq!(
//!     Launcher::Srun.command(&spec).join(" "),
//!     "srun --nodes=2 --ntasks=6 --ntasks-per-node=3 --mpi=pmix --kill-on-bad-exit=1 taps-worker -c config.toml"
//! );
//! assert_eq!(Launcher::Mpiexec.command(&spec).join(" "), "mpiexec -n 6 taps-worker -c config.toml");
//! ```

crate::opt_enum! {
    /// How the ranks of an MPI program are started.
    pub enum Launcher {
        /// Slurm's `srun`, with `--mpi=pmix` (what Debian's OpenMPI needs; MPICH wants `--mpi=pmi2`).
        Srun = "srun",
        /// The MPI library's `mpirun` (takes the hosts from the allocation or a host file).
        Mpirun = "mpirun",
        /// The MPI library's `mpiexec` (the usual PBS launcher).
        Mpiexec = "mpiexec",
    }
}

/// What to start, and how many copies where.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchSpec {
    /// Nodes to spread the ranks over.
    pub nodes: u32,
    /// Ranks on each node.
    pub ranks_per_node: u32,
    /// Host file with one line per rank (mpirun/mpiexec only; None = hosts of the allocation).
    pub hostfile: Option<String>,
    /// Extra launcher arguments, placed just before the program.
    pub extra_args: Vec<String>,
    /// The program and its arguments.
    pub program: Vec<String>,
}

impl LaunchSpec {
    /// `nodes × ranks_per_node` copies of `program`, no host file, no extra arguments.
    pub fn new(nodes: u32, ranks_per_node: u32, program: Vec<String>) -> Self {
        LaunchSpec { nodes, ranks_per_node, hostfile: None, extra_args: Vec::new(), program }
    }

    /// Total number of ranks.
    pub fn ranks(&self) -> u64 {
        u64::from(self.nodes) * u64::from(self.ranks_per_node)
    }
}

impl Launcher {
    /// The launcher's executable.
    pub fn program(&self) -> &'static str {
        match self {
            Launcher::Srun => "srun",
            Launcher::Mpirun => "mpirun",
            Launcher::Mpiexec => "mpiexec",
        }
    }

    /// The full command line (unquoted words).
    pub fn command(&self, spec: &LaunchSpec) -> Vec<String> {
        let n = spec.ranks().to_string();
        let mut argv: Vec<String> = vec![self.program().into()];
        match self {
            Launcher::Srun => {
                // Explicit counts, as HyperQueue does: never depend on what the allocation implies.
                argv.push(format!("--nodes={}", spec.nodes));
                argv.push(format!("--ntasks={}", n));
                argv.push(format!("--ntasks-per-node={}", spec.ranks_per_node));
                // What Debian's OpenMPI needs; an `--mpi=...` of the user's replaces it.
                if !spec.extra_args.iter().any(|a| a.starts_with("--mpi")) {
                    argv.push("--mpi=pmix".into());
                }
                // One rank dying ends the step instead of leaving the others waiting for it.
                argv.push("--kill-on-bad-exit=1".into());
            }
            Launcher::Mpirun => argv.extend(["-np".into(), n]),
            Launcher::Mpiexec => argv.extend(["-n".into(), n]),
        }
        if let Some(h) = &spec.hostfile
            && *self != Launcher::Srun
        {
            argv.extend(["--hostfile".into(), h.clone()]);
        }
        argv.extend(spec.extra_args.iter().cloned());
        argv.extend(spec.program.iter().cloned());
        argv
    }
}

/// Quotes one word for a POSIX shell (unchanged when it needs no quoting).
pub fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Joins words into a shell command line; words listed in `raw` (e.g. `"$PBS_NODEFILE"`) are
/// passed through unquoted.
pub fn shell_join(argv: &[String], raw: &[&str]) -> String {
    argv.iter()
        .map(|w| if raw.contains(&w.as_str()) { w.clone() } else { shell_quote(w) })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            nodes: 2,
            ranks_per_node: 4,
            hostfile: Some("hosts".into()),
            extra_args: vec!["-x".into(), "A=1".into()],
            program: vec!["prog".into(), "arg".into()],
        }
    }

    #[test]
    fn every_launcher_starts_nodes_times_ranks() {
        let s = spec();
        assert_eq!(
            Launcher::Srun.command(&s).join(" "),
            "srun --nodes=2 --ntasks=8 --ntasks-per-node=4 --mpi=pmix --kill-on-bad-exit=1 -x A=1 prog arg"
        );
        assert_eq!(Launcher::Mpirun.command(&s).join(" "), "mpirun -np 8 --hostfile hosts -x A=1 prog arg");
        assert_eq!(Launcher::Mpiexec.command(&s).join(" "), "mpiexec -n 8 --hostfile hosts -x A=1 prog arg");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b-c_d.toml"), "/a/b-c_d.toml");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        let argv: Vec<String> = ["x", "$H", "a b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(shell_join(&argv, &["$H"]), "x $H 'a b'");
    }
}
