//! The app interface: a benchmark workload that submits tasks to an [`Engine`], and the kit for
//! apps that run programs: [`require_programs`] for their preflight, [`TaskCommand`] to run one
//! in a task's own working directory (see apps/README.md, "Adding an app").

use std::ffi::{OsStr, OsString};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::engine::Engine;
use crate::plugins::{Plugin, PluginOptions};
use crate::task::{ErrorKind, Registry, TaskError};

/// A benchmark application.
pub trait App: Send {
    /// Runs the workload; outputs go into `run_dir`.
    fn run(&mut self, engine: &Engine, run_dir: &Path) -> anyhow::Result<()>;
    /// Checks and writes the outputs into `run_dir` after the timed part (`run`), as the
    /// reference times only the workflow; logs what it does with its own times.
    fn save(&mut self, _run_dir: &Path) -> anyhow::Result<()> {
        Ok(())
    }
    /// Cleans up after the engine has shut down (e.g. removes generated inputs).
    fn close(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// An app's typed options: they build the app and say what it needs (the Python suite's
/// `AppConfig.get_app()`).
pub trait AppConfig: PluginOptions {
    /// Builds the app, inside the run directory.
    fn get_app(&self, run_dir: &Path) -> anyhow::Result<Box<dyn App>>;
    /// Checks inputs and external programs before the run directory is created.
    fn preflight(&self) -> Result<(), String> {
        Ok(())
    }
    /// What a run with these options takes: memory and files in the run directory.
    fn footprint(&self) -> Footprint {
        Footprint::default()
    }
}

/// An app plugin: its name and options, and its tasks.
pub struct AppPlugin {
    /// Name and options.
    pub plugin: Plugin<dyn AppConfig>,
    /// Adds the app's tasks to the registry (so every worker can run them).
    pub register_tasks: fn(&mut Registry),
}

/// What a run of an app takes, estimated from its options before it starts (see
/// `taps::limits`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Footprint {
    /// Memory the run needs at least, in bytes: a lower bound, so that only runs that provably
    /// cannot fit are refused.
    pub memory_bytes: u64,
    /// What that memory is for, naming the options that drive it (for the error message).
    pub memory_for: String,
    /// Files the app writes in the run directory: (the option naming it, file name).
    pub files: Vec<(String, String)>,
}

/// A fresh random seed for an app run without one (the app logs it): below 2^63, so that the
/// user can give it back with `--app.seed` (TOML integers are signed 64-bit).
pub fn fresh_seed() -> u64 {
    rand::random::<u64>() >> 1
}

/// Checks that `program` is on PATH; the error names it and how to get it.
pub(crate) fn require_program(program: &str, package_hint: &str) -> Result<(), String> {
    match find_program(program) {
        Some(_) => Ok(()),
        None => Err(format!("{} not found on PATH: {}", program, package_hint)),
    }
}

/// Checks every `(program, install hint)` an app runs, for its preflight (before the run
/// directory is created): the error names the first missing program and how to install it.
///
/// ```
/// assert!(taps::app::require_programs(&[("sh", "apt install dash")]).is_ok());
/// let err = taps::app::require_programs(&[("sh", "apt install dash"), ("no-such-vina", "apt install autodock-vina")]);
/// assert_eq!(err.unwrap_err(), "no-such-vina not found on PATH: apt install autodock-vina");
/// ```
pub fn require_programs(programs: &[(&str, &str)]) -> Result<(), String> {
    programs.iter().try_for_each(|(program, hint)| require_program(program, hint))
}

/// Where `program` is: itself if it names a path (contains `/`), else the first executable of
/// that name on PATH.
pub(crate) fn find_program(program: &str) -> Option<PathBuf> {
    crate::shell::find_program(program)
}

/// How many lines of a failed program's stderr its error quotes.
pub(crate) const STDERR_LINES: usize = 20;

/// A program run by a task in the task's own working directory, `RUN_DIR/tasks/TASK-ID/` (or a
/// name the app chooses), with stdout and stderr captured to `PROGRAM.stdout` and
/// `PROGRAM.stderr` there. A failure is a [`ErrorKind::ProgramFailed`] error naming the command,
/// its exit status or signal, and the last [`STDERR_LINES`] lines of its stderr.
///
/// ```no_run
/// # fn body() -> Result<(), taps::task::TaskError> {
/// use taps::app::TaskCommand;
/// let out = TaskCommand::new("wc").arg("-w").arg("/etc/hostname").run()?;
/// let words = std::fs::read_to_string(&out.stdout)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TaskCommand {
    program: String,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    dir_name: Option<String>,
}

/// Where a finished [`TaskCommand`] left its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramOutput {
    /// The working directory it ran in.
    pub dir: PathBuf,
    /// Its captured standard output.
    pub stdout: PathBuf,
    /// Its captured standard error.
    pub stderr: PathBuf,
}

impl TaskCommand {
    /// Runs `program` (looked up on PATH unless it contains `/`).
    pub fn new(program: impl Into<String>) -> Self {
        TaskCommand { program: program.into(), args: Vec::new(), envs: Vec::new(), dir_name: None }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets an environment variable for the program.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs.push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Runs in `RUN_DIR/tasks/NAME/` instead of the task id's directory.
    pub fn dir_name(mut self, name: impl Into<String>) -> Self {
        self.dir_name = Some(name.into());
        self
    }

    /// The command as a shell would read it (for messages).
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_str().into())
            .chain(self.args.iter().map(|a| a.to_string_lossy()))
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs the program in the current task's working directory (see [`crate::task::TaskContext::work_dir`])
    /// and waits for it; fails unless it exits with status 0.
    pub fn run(self) -> Result<ProgramOutput, TaskError> {
        let context = crate::task::context().ok_or_else(|| {
            TaskError::new(
                ErrorKind::ProgramFailed,
                format!("cannot run `{}`: TaskCommand::run is called outside a task body", self.display()),
            )
        })?;
        let dir = context.work_dir(self.dir_name.as_deref())?;
        self.run_in(&dir)
    }

    /// Like [`run`](Self::run), in `dir` (created if missing).
    pub fn run_in(self, dir: &Path) -> Result<ProgramOutput, TaskError> {
        let shown = self.display();
        let fail = |what: String| TaskError::new(ErrorKind::ProgramFailed, format!("`{}` {}", shown, what));
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot run: cannot create {}: {}", dir.display(), e)))?;
        let base = Path::new(&self.program).file_name().map(|n| n.to_string_lossy().into_owned());
        let base = base.unwrap_or_else(|| "program".into());
        let out = ProgramOutput {
            dir: dir.to_path_buf(),
            stdout: dir.join(format!("{}.stdout", base)),
            stderr: dir.join(format!("{}.stderr", base)),
        };
        let create = |p: &Path| {
            std::fs::File::create(p).map_err(|e| fail(format!("cannot run: cannot create {}: {}", p.display(), e)))
        };
        let (stdout, stderr) = (create(&out.stdout)?, create(&out.stderr)?);
        let mut command = Command::new(&self.program);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec the closure calls only async-signal-safe functions.
        unsafe { command.pre_exec(move || die_with_parent(parent)) };
        let status = command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => fail(format!("cannot start: {} not found on PATH", self.program)),
                _ => fail(format!("cannot start: {}", e)),
            })?;
        if status.success() {
            return Ok(out);
        }
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {}", code),
            (None, Some(sig)) => format!("was killed by signal {}{}", sig, signal_name(sig)),
            _ => format!("failed ({})", status),
        };
        let tail = last_lines(&out.stderr, STDERR_LINES);
        let mut message = format!("{} (in {})", how, dir.display());
        if tail.is_empty() {
            message.push_str("; its stderr is empty");
        } else {
            message.push_str(&format!("; last lines of its stderr ({}):\n{}", out.stderr.display(), tail));
        }
        Err(fail(message))
    }
}

/// Runs in the forked child before exec: the program gets SIGKILL when the thread that started
/// it ends, so a worker process that dies, or a run that ends while a task still waits on its
/// program (an interrupt, a lost rank), leaves no program behind. If `parent` (the process that
/// forked) already died before the request took effect, the child stops at once.
fn die_with_parent(parent: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: getppid, prctl and _exit are async-signal-safe.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    Ok(())
}

/// ` (SIGKILL)` for the common signals, else nothing.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => " (SIGHUP)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGQUIT => " (SIGQUIT)",
        libc::SIGILL => " (SIGILL)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGFPE => " (SIGFPE)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGPIPE => " (SIGPIPE)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGXCPU => " (SIGXCPU)",
        _ => "",
    }
}

/// The last `n` lines of a file (read from its last 64 KiB), trailing newline removed.
fn last_lines(path: &Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 64 << 10;
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.trim_end_matches('\n').lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Quotes `s` for a shell if it has characters a shell would read specially.
fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) { s.to_string() } else { format!("'{}'", s.replace('\'', "'\\''")) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fresh_seeds_fit_a_toml_integer() {
        // 64 draws of a full u64 would all be below 2^63 with probability 2^-64.
        assert!((0..64).all(|_| super::fresh_seed() <= i64::MAX as u64));
    }
}
