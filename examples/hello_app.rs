//! The example app of apps/README.md, "Adding an app": its tasks run a program (`wc`) on input
//! files, each in its own working directory, and a last task adds the counts. tests/app_guide.rs
//! compiles this file and runs it through the real engine, so the guide cannot go stale.
//!
//! ```text
//! cargo run --release --example hello_app -- [FILES] [PROGRAM]     # e.g. 3 wc
//! ```

use std::path::{Path, PathBuf};

use taps::app::{App, AppConfig, AppPlugin, TaskCommand, require_programs};
use taps::engine::{Engine, EngineSummary};
use taps::executor::thread_pool::ThreadPool;
use taps::options::Validate;
use taps::record::RecordWriter;
use taps::task::{FilePath, Many, Registry, Task, TaskError};

// 1. Options: a field without a default is required; `impl Validate` only for cross-field checks.
taps::options! {
    /// Options of the hello app.
    pub struct HelloOptions {
        /// Number of input files, one counting task each.
        files: u64,
        /// Program that counts the words of a file as `wc -w` does.
        program: String = "wc".into(),
    }
}

impl Validate for HelloOptions {
    fn validate(&self) -> Result<(), String> {
        if self.files == 0 { Err("app.files must be at least 1".into()) } else { Ok(()) }
    }
}

// 2. Tasks: a name, argument and result types, a body. Paths travel as `FilePath`.
/// `hello-count-words(path, program)`: runs `PROGRAM -w PATH` in the task's own directory,
/// `RUN_DIR/tasks/TASK-ID/`, and returns the count it printed.
pub struct CountWords;
impl Task for CountWords {
    const NAME: &'static str = "hello-count-words";
    type Args = (FilePath, String);
    type Output = u64;
    fn run((path, program): Self::Args) -> Result<u64, TaskError> {
        // A failure (exit status, signal, not installed) is an error naming the command, its
        // status and the end of its stderr; stdout and stderr stay in the task's directory.
        let out = TaskCommand::new(program).arg("-w").arg(path.path()).run()?;
        let text = std::fs::read_to_string(&out.stdout)?;
        text.split_whitespace().next().and_then(|n| n.parse().ok()).ok_or_else(|| {
            TaskError::exception("ParseError", format!("expected a count in {}, got {:?}", out.stdout.display(), text))
        })
    }
}

/// `hello-total(*counts)`: their sum.
pub struct Total;
impl Task for Total {
    const NAME: &'static str = "hello-total";
    type Args = (Many<u64>,);
    type Output = u64;
    fn run((counts,): Self::Args) -> Result<u64, TaskError> {
        Ok(counts.0.iter().sum())
    }
}

// 3. The app: submits tasks to the engine and checks the result.
/// The hello app: `files` files of 2, 4, 6, ... words, counted by one task each, then added up.
pub struct HelloApp {
    opts: HelloOptions,
}

impl App for HelloApp {
    fn run(&mut self, engine: &Engine, run_dir: &Path) -> anyhow::Result<()> {
        let inputs = run_dir.join("inputs");
        std::fs::create_dir_all(&inputs)?;
        let mut counts = Vec::new();
        for i in 1..=self.opts.files {
            let path = inputs.join(format!("{}.txt", i));
            std::fs::write(&path, "hello world\n".repeat(i as usize))?;
            counts.push(engine.submit::<CountWords>((path.into(), self.opts.program.clone().into())));
        }
        // Futures as arguments are dependencies: `total` runs once every count is done, and
        // fails as ParentFailed (naming the failed count task) if one of them fails.
        let total = engine.submit::<Total>((counts.iter().map(Into::into).collect(),));
        let (got, want) = (total.result()?, self.opts.files * (self.opts.files + 1));
        anyhow::ensure!(got == want, "counted {} words, expected {}", got, want);
        taps::app_info!("Counted {} words in {} files", got, self.opts.files);
        Ok(())
    }
}

// 4. The plugin: the options build the app and check, before the run directory exists, what
// it needs (here the program its tasks run); the tasks are registered in every worker.
impl AppConfig for HelloOptions {
    fn get_app(&self, _run_dir: &Path) -> anyhow::Result<Box<dyn App>> {
        Ok(Box::new(HelloApp { opts: self.clone() }))
    }

    fn preflight(&self) -> Result<(), String> {
        require_programs(&[(self.program.as_str(), "apt-get install coreutils")])
    }
}

fn register_tasks(r: &mut Registry) {
    r.add::<CountWords>().add::<Total>();
}

/// The plugin entry (in taps: listed in `apps::ALL`).
pub const PLUGIN: AppPlugin = AppPlugin {
    plugin: taps::plugin!(dyn AppConfig, HelloOptions, "hello", "counts words with a program, one task per file"),
    register_tasks,
};

/// Runs the app with `options` as `taps run` does, on a thread pool: the options and the
/// preflight first (their errors leave nothing behind), then `run_dir` is created and gets
/// `tasks.jsonl`.
pub fn run(options: &toml::Table, run_dir: &Path) -> anyhow::Result<EngineSummary> {
    let config = (PLUGIN.plugin.parse)(options, "app").map_err(anyhow::Error::msg)?;
    config.preflight().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(run_dir)?;
    let mut app = config.get_app(run_dir)?;
    let records = RecordWriter::create(&run_dir.join("tasks.jsonl"))?;
    let engine = Engine::builder(Box::new(ThreadPool::new(2))).records(records).run_dir(run_dir).try_build()?;
    let result = app.run(&engine, run_dir);
    let summary = engine.shutdown();
    result.map(|()| summary)
}

#[allow(dead_code)] // the test uses `run`
fn main() {
    let mut args = std::env::args().skip(1);
    let mut options = toml::Table::new();
    options.insert("files".into(), args.next().unwrap_or_else(|| "3".into()).parse::<i64>().unwrap_or(0).into());
    options.insert("program".into(), args.next().unwrap_or_else(|| "wc".into()).into());
    let run_dir = PathBuf::from(format!("runs/hello-{}", std::process::id()));
    match run(&options, &run_dir) {
        Ok(s) => {
            println!("{} tasks, {} failed; records in {}", s.records, s.failed, run_dir.join("tasks.jsonl").display())
        }
        Err(e) => {
            eprintln!("taps: error: {:#}", e);
            std::process::exit(2);
        }
    }
}
