//! The bridge to Python task engines (Dask, Ray, Parsl): one Python process per run
//! (`python -m taps_bridge`, from the engines' virtual environment, code in the repository's
//! `python/`) runs the engine's real client and submits each taps task as an engine task; on the
//! engine's workers a small Python function runs the task's [`protocol`](crate::protocol) frames
//! through a `taps-worker` process it keeps (one per worker thread, started on first use).
//!
//! Messages to and from the bridge (its stdin and stdout) are `u32 LE json length, u32 LE blob
//! count, u64 LE per blob, json, blobs`. A task goes as the header of its `Run` frame and its
//! arguments; a parent's result stays in the engine: the child names the parent's key and the
//! bridge passes the parent's engine future, so the value moves between the engine's workers. A
//! finished task comes back as its `Done` header, and its result is a [held
//! reference](crate::engine::HeldValues) fetched from the bridge only when the app asks
//! ([`TaskFuture::result`](crate::engine::TaskFuture::result)) — unless it is at most
//! [`INLINE_MAX`] bytes, which come with the header (one round trip less for small results).
//!
//! A child goes to the engine as soon as it is submitted, naming its unfinished parents' keys
//! ([`Executor::pending_ref`]): the engine waits for them on its own. The bridge keeps each task's
//! engine future only while something may need it: a held result until the engine
//! [releases](HeldValues::release) it (its futures dropped, its children finished), any other
//! task (small result, failure) until the driver has its completion; then the engine forgets it
//! (Dask releases the key, Ray frees the object, Parsl drops the app future).
//!
//! The bridge runs in a process group of its own; at shutdown (also after an interrupt) it
//! closes the engine, and the whole group is killed.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, bounded};
use serde::Serialize;

use crate::data::DataLayer;
use crate::engine::{
    Completer, Completion, Executor, HeldValues, Job, held_key, held_ref, register_held, release_held,
};
use crate::protocol::{Frame, FromWorker, Message, PROTOCOL_VERSION, ToWorker, WirePayload};
use crate::task::{DataRef, ErrorKind, Payload, TaskError};

/// Results of at most this many bytes come to the driver with their task's completion.
pub const INLINE_MAX: usize = 1024;

/// How long the engine may take to start (a Ray cluster on a loaded node takes a while).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a shutdown waits for the engine to close before its processes are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variable naming the engines' virtual environment.
pub const VENV_ENV: &str = "TAPS_ENGINES_VENV";
/// Environment variable that, set to `0`, keeps tasks out of the engine's worker processes: each
/// engine worker then runs them in a `taps-worker` process of its own, as without `taps_native`.
pub const IN_PROCESS_ENV: &str = "TAPS_IN_PROCESS";
/// Environment variable naming the directory holding the `taps_bridge` Python package.
pub const PYTHON_DIR_ENV: &str = "TAPS_PYTHON_DIR";

/// The engines' virtual environment: `$TAPS_ENGINES_VENV`, else `.venv-engines` in the source tree.
pub fn venv() -> PathBuf {
    std::env::var_os(VENV_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-engines"))
}

/// The directory of the `taps_bridge` package: `$TAPS_PYTHON_DIR`, else `python/` in the source tree.
pub fn python_dir() -> PathBuf {
    std::env::var_os(PYTHON_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("python"))
}

/// What identifies this build's task code (version, a hash of the sources it is built from, see
/// build.rs, and the protocol version): the engines' workers run tasks in process (`taps_native`,
/// python/taps-native) only when the module's build is this one. A commit that changes no source
/// (documentation, tests, scripts) leaves it as it was.
pub fn build_id() -> String {
    format!("{}-src{}-p{}", env!("CARGO_PKG_VERSION"), env!("TAPS_SOURCE_ID"), PROTOCOL_VERSION)
}

/// Environment variable that, set to `null`, has the bridge run every task itself with no engine
/// (`taps_bridge.engines.Null`: what taps and the bridge add per task, for
/// `scripts/bench-engines.sh`); no other value is taken.
pub const ENGINE_OVERRIDE_ENV: &str = "TAPS_BRIDGE_ENGINE";

/// Checks that the virtual environment has Python package `package` (for executor `engine`);
/// the error names the install script. A [`ENGINE_OVERRIDE_ENV`] other than `null` is refused.
pub fn check_installed(engine: &str, package: &str) -> Result<(), String> {
    if let Some(v) = std::env::var_os(ENGINE_OVERRIDE_ENV).filter(|v| !v.is_empty() && v.as_os_str() != "null") {
        return Err(format!(
            "{}={}: the only value it takes is null (unset it to run {})",
            ENGINE_OVERRIDE_ENV,
            v.to_string_lossy(),
            engine
        ));
    }
    let venv = venv();
    let python = venv.join("bin/python");
    let hint = format!(
        "executor {:?} needs the engines' Python environment: install it with scripts/install-engines.sh \
         (or point {} at a virtual environment that has it)",
        engine, VENV_ENV
    );
    if !python.exists() {
        return Err(format!("{} ({} does not exist)", hint, python.display()));
    }
    let has = std::fs::read_dir(venv.join("lib"))
        .map(|d| d.flatten().any(|py| py.path().join("site-packages").join(package).is_dir()))
        .unwrap_or(false);
    if !has {
        return Err(format!("{} (package {:?} is not in {})", hint, package, venv.display()));
    }
    if !python_dir().join("taps_bridge").is_dir() {
        return Err(format!(
            "executor {:?}: the taps_bridge Python package is not in {} (set {})",
            engine,
            python_dir().display(),
            PYTHON_DIR_ENV
        ));
    }
    Ok(())
}

/// A message to or from the bridge.
struct Msg {
    json: serde_json::Value,
    blobs: Vec<Bytes>,
}

fn write_msg(w: &mut impl Write, json: &serde_json::Value, blobs: &[Bytes]) -> std::io::Result<()> {
    let j = serde_json::to_vec(json).map_err(std::io::Error::other)?;
    let mut head = Vec::with_capacity(8 + 8 * blobs.len() + j.len());
    head.extend_from_slice(&(j.len() as u32).to_le_bytes());
    head.extend_from_slice(&(blobs.len() as u32).to_le_bytes());
    for b in blobs {
        head.extend_from_slice(&(b.len() as u64).to_le_bytes());
    }
    head.extend_from_slice(&j);
    w.write_all(&head)?;
    for b in blobs {
        w.write_all(b)?;
    }
    w.flush()
}

/// Reads one message; `None` at end of stream. Counts the bytes read in `count`.
fn read_msg(r: &mut impl Read, count: &AtomicU64) -> std::io::Result<Option<Msg>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let jlen = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
    let n = u32::from_le_bytes(head[4..].try_into().unwrap()) as usize;
    let mut lens = vec![0u8; 8 * n];
    r.read_exact(&mut lens)?;
    let mut j = vec![0u8; jlen];
    r.read_exact(&mut j)?;
    let json = serde_json::from_slice(&j).map_err(std::io::Error::other)?;
    let mut blobs = Vec::with_capacity(n);
    let mut total = 8 + 8 * n + jlen;
    for c in lens.chunks_exact(8) {
        let len = u64::from_le_bytes(c.try_into().unwrap()) as usize;
        let mut b = vec![0u8; len];
        r.read_exact(&mut b)?;
        total += len;
        blobs.push(Bytes::from(b));
    }
    count.fetch_add(total as u64, Ordering::Relaxed);
    Ok(Some(Msg { json, blobs }))
}

/// A reference payload as the protocol's header slot encodes it (`Slot::Ref`).
#[derive(Serialize)]
enum SlotRef<'a> {
    #[allow(dead_code)]
    Segment,
    Ref(&'a DataRef),
}

/// What the reader thread and the executor share.
struct Inner {
    engine: &'static str,
    /// Holder id of this bridge's results.
    held: Mutex<Option<u64>>,
    stdin: Mutex<Option<BufWriter<std::process::ChildStdin>>>,
    /// Tasks sent and not finished: seq → key.
    running: Mutex<HashMap<u64, String>>,
    /// Keys whose engine future the bridge keeps (submitted and not released).
    live: Mutex<HashSet<String>>,
    /// Keys of finished tasks whose result is not held (small, or a failure): the bridge may
    /// forget them once no child can take them as a pending parent (they left `running` first),
    /// with the next submission (which may still name them) or at shutdown.
    unheld: Mutex<Vec<String>>,
    fetches: Mutex<HashMap<u64, Sender<Msg>>>,
    next_fetch: AtomicU64,
    /// The bridge is gone (died or shut down): why.
    gone: Mutex<Option<String>>,
    received: AtomicU64,
    pid: u32,
    /// The engine takes a child before its parents finished (its `ready` message says so).
    pending_parents: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn send(&self, json: serde_json::Value, blobs: &[Bytes]) -> Result<(), String> {
        if let Some(why) = self.gone.lock().unwrap().clone() {
            return Err(why);
        }
        let mut w = self.stdin.lock().unwrap();
        let Some(w) = w.as_mut() else { return Err(format!("the {} bridge is shut down", self.engine)) };
        write_msg(w, &json, blobs).map_err(|e| format!("cannot write to the {} bridge: {}", self.engine, e))
    }

    /// Sends a request and waits for the answer with the same id.
    fn ask(&self, mut json: serde_json::Value) -> Result<Msg, String> {
        let id = self.next_fetch.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = bounded(1);
        self.fetches.lock().unwrap().insert(id, tx);
        json["id"] = id.into();
        if let Err(e) = self.send(json, &[]) {
            self.fetches.lock().unwrap().remove(&id);
            return Err(e);
        }
        rx.recv().map_err(|_| {
            self.gone.lock().unwrap().clone().unwrap_or_else(|| format!("the {} bridge ended", self.engine))
        })
    }
}

impl HeldValues for Inner {
    fn fetch(&self, key: &str) -> Result<Payload, TaskError> {
        let lost = |m: String| TaskError::new(ErrorKind::UnresolvedReference, m);
        let m = self.ask(serde_json::json!({"op": "fetch", "key": key})).map_err(lost)?;
        if let Some(e) = m.json.get("error").and_then(|e| e.as_str()) {
            return Err(lost(format!("cannot fetch the result of {} from {}: {}", key, self.engine, e)));
        }
        let mut blobs = m.blobs.into_iter();
        let header = blobs.next().unwrap_or_default().to_vec();
        let frame = Frame { header, segments: blobs.collect() };
        match FromWorker::decode(frame) {
            Ok(FromWorker::Done { outcome, .. }) => outcome.map(Payload::from),
            Ok(_) => Err(lost(format!("{}: the bridge sent something other than a result", self.engine))),
            Err(e) => Err(lost(format!("{}: {}", self.engine, e))),
        }
    }

    /// Tells the bridge to drop the key's engine future.
    fn release(&self, key: &str) {
        if self.live.lock().unwrap().remove(key) {
            let _ = self.send(serde_json::json!({"op": "release", "keys": [key]}), &[]);
        }
    }
}

/// An executor whose tasks run in a Python engine through the bridge.
pub struct Bridge {
    engine: &'static str,
    options: serde_json::Value,
    worker: PathBuf,
    env: Vec<(String, String)>,
    inner: Option<Arc<Inner>>,
    child: Option<Child>,
    reader: Option<std::thread::JoinHandle<()>>,
    describe: String,
    done: Option<Completer>,
    /// The engine's temporary directory (`TMPDIR` of the bridge and every process it starts:
    /// Ray's session, Dask's scratch space, Python's and HyperQueue's sockets), removed at the end.
    tmp: Option<tempfile::TempDir>,
}

impl Bridge {
    /// A bridge to `engine` (`dask`, `ray`, `parsl-local`) with its options (the bridge's
    /// names), running tasks with the taps worker program `worker`.
    pub fn new(engine: &'static str, options: serde_json::Value, worker: PathBuf, env: Vec<(String, String)>) -> Self {
        Bridge {
            engine,
            options,
            worker,
            env,
            inner: None,
            child: None,
            reader: None,
            describe: engine.to_string(),
            done: None,
            tmp: None,
        }
    }

    /// Bytes the driver has received from the bridge so far (headers, small results, fetched results).
    pub fn received(&self) -> u64 {
        self.inner.as_ref().map_or(0, |i| i.received.load(Ordering::Relaxed))
    }

    fn spawn(&self, tmp: &Path) -> anyhow::Result<Child> {
        let venv = venv();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![venv.join("bin")];
        paths.extend(std::env::split_paths(&path));
        let mut cmd = Command::new(venv.join("bin/python"));
        cmd.args(["-m", "taps_bridge"])
            .env("PYTHONPATH", python_dir())
            .env("PATH", std::env::join_paths(paths)?)
            .env("VIRTUAL_ENV", &venv)
            .env("TMPDIR", tmp)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        // SAFETY: prctl only; the bridge gets SIGTERM (and then kills its group) if the driver dies.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
                Ok(())
            });
        }
        cmd.spawn().map_err(|e| anyhow::anyhow!("cannot start the {} bridge ({}): {}", self.engine, venv.display(), e))
    }
}

/// Reads the bridge's messages: completions, answers, and the end.
fn read_loop(inner: Arc<Inner>, out: std::process::ChildStdout, done: Completer, first: Sender<Msg>) {
    let mut r = BufReader::with_capacity(1 << 16, out);
    let mut first = Some(first);
    let why = loop {
        let m = match read_msg(&mut r, &inner.received) {
            Ok(Some(m)) => m,
            Ok(None) => break format!("the {} bridge (pid {}) ended", inner.engine, inner.pid),
            Err(e) => break format!("the {} bridge (pid {}) failed: {}", inner.engine, inner.pid, e),
        };
        match m.json["op"].as_str().unwrap_or_default() {
            "ready" | "error" => {
                if let Some(f) = first.take() {
                    let _ = f.send(m);
                }
            }
            "done" => {
                let seq = m.json["seq"].as_u64().unwrap_or_default();
                let key = inner.running.lock().unwrap().remove(&seq);
                let c = completion(&inner, seq, key.clone(), m);
                if !matches!(&c.outcome, Ok(Payload::Ref(r)) if held_key(r).is_some()) {
                    inner.unheld.lock().unwrap().extend(key);
                }
                done.complete(c);
            }
            "value" | "stats" => {
                let id = m.json["id"].as_u64().unwrap_or_default();
                if let Some(tx) = inner.fetches.lock().unwrap().remove(&id) {
                    let _ = tx.send(m);
                }
            }
            "bye" => {
                let n = |k: &str| m.json.get(k).and_then(|v| v.as_u64()).unwrap_or_default();
                let engine = m.json.get("engine_tasks").and_then(|v| v.as_u64());
                tracing::info!(
                    target: "taps.run",
                    "{} bridge: {} engine future(s) held at the end, at most {} at once{}; {} task(s) went to the \
                     engine before their parents finished; {} task(s) ran inside the engine's workers",
                    inner.engine,
                    n("held"),
                    n("peak"),
                    engine.map(|t| format!(" (the engine's scheduler holds {} task(s))", t)).unwrap_or_default(),
                    n("early"),
                    n("in_process")
                );
                break format!("the {} bridge is shut down", inner.engine);
            }
            _ => {}
        }
    };
    inner.gone.lock().unwrap().get_or_insert(why.clone());
    inner.fetches.lock().unwrap().clear();
    drop(first);
    // Tasks the bridge never reported fail (their workers are gone).
    let lost: Vec<u64> = inner.running.lock().unwrap().drain().map(|(s, _)| s).collect();
    for seq in lost {
        done.complete(Completion {
            seq,
            outcome: Err(TaskError::new(ErrorKind::WorkerLost, format!("{} before this task ended", why))),
            execution: None,
            worker: None,
        });
    }
}

/// The completion of task `seq` from the bridge's `done` message.
fn completion(inner: &Inner, seq: u64, key: Option<String>, m: Msg) -> Completion {
    let fail = |e: TaskError| Completion { seq, outcome: Err(e), execution: None, worker: None };
    if let Some(e) = m.json.get("error") {
        let s = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let mut err = TaskError::new(s("type").as_str(), format!("{}: {}", inner.engine, s("message")));
        err.traceback = s("traceback");
        return fail(err);
    }
    let worker = m.json.get("worker").and_then(|w| w.as_str()).map(|w| format!("{}-{}", inner.engine, w));
    let mut blobs = m.blobs.into_iter();
    let header = blobs.next().unwrap_or_default().to_vec();
    let frame = Frame { header, segments: blobs.collect() };
    let (outcome, execution) = match FromWorker::decode(frame) {
        Ok(FromWorker::Done { outcome, execution, .. }) => (outcome, execution),
        Ok(_) => return fail(TaskError::new(ErrorKind::WorkerLost, "the bridge sent something other than a result")),
        Err(e) => return fail(TaskError::new(ErrorKind::WorkerLost, format!("{}: {}", inner.engine, e))),
    };
    let inline = m.json.get("inline").and_then(|v| v.as_bool()).unwrap_or(false);
    let size = m.json.get("size").and_then(|v| v.as_u64()).unwrap_or_default();
    let outcome = outcome.map(|w| match (w, inline, key, *inner.held.lock().unwrap()) {
        (WirePayload::Bytes(_), false, Some(key), Some(id)) => Payload::Ref(held_ref(id, &key, size)),
        (w, _, _, _) => Payload::from(w),
    });
    // An engine that cannot name the worker (hyperqueue: a program task) gives its host.
    let worker = worker.or_else(|| Some(format!("{}-{}", inner.engine, execution.hostname)));
    Completion { seq, outcome, execution: Some(execution), worker }
}

impl Executor for Bridge {
    fn start(&mut self, done: Completer, data: Arc<DataLayer>) -> anyhow::Result<()> {
        // Completions come a millisecond or more apart: the driver's threads block at once
        // instead of polling (unless TAPS_SPIN_US says otherwise), leaving the cores to the engine.
        crate::spin::prefer_budget(Duration::ZERO);
        self.done = Some(done.clone());
        let tmp = tempfile::Builder::new().prefix(&format!("taps-{}-", self.engine)).tempdir().map_err(|e| {
            anyhow::anyhow!("cannot create a temporary directory in {}: {}", std::env::temp_dir().display(), e)
        })?;
        let mut child = self.spawn(tmp.path())?;
        self.tmp = Some(tmp);
        let stdin = BufWriter::with_capacity(1 << 16, child.stdin.take().expect("piped"));
        let stdout = child.stdout.take().expect("piped");
        let inner = Arc::new(Inner {
            engine: self.engine,
            held: Mutex::new(None),
            stdin: Mutex::new(Some(stdin)),
            running: Mutex::default(),
            live: Mutex::default(),
            unheld: Mutex::default(),
            fetches: Mutex::default(),
            next_fetch: AtomicU64::new(1),
            gone: Mutex::new(None),
            received: AtomicU64::new(0),
            pid: child.id(),
            pending_parents: Default::default(),
        });
        self.child = Some(child);
        self.inner = Some(inner.clone());
        let (tx, rx): (Sender<Msg>, Receiver<Msg>) = bounded(1);
        let i = inner.clone();
        self.reader = Some(
            std::thread::Builder::new()
                .name(format!("taps-{}-bridge", self.engine))
                .spawn(move || read_loop(i, stdout, done, tx))?,
        );
        let hello =
            ToWorker::Hello { version: PROTOCOL_VERSION, data: data.spec().clone(), name: self.engine.to_string() }
                .encode()
                .to_vec();
        let mut options = self.options.clone();
        if let (Some(dir), Some(o)) = (data.run_dir(), options.as_object_mut()) {
            // Relative paths in the options (parsl's run_dir) are in the run directory.
            if let Some(serde_json::Value::String(d)) = o.get("run_dir")
                && Path::new(d).is_relative()
            {
                let d = dir.join(d).display().to_string();
                o.insert("run_dir".into(), d.into());
            }
        }
        let in_process = std::env::var(IN_PROCESS_ENV).map_or(true, |v| v.trim() != "0");
        let start = serde_json::json!({
            "op": "start", "engine": self.engine, "options": options,
            "worker": self.worker, "inline": INLINE_MAX,
            "build": in_process.then(build_id),
        });
        let answer = inner.send(start, &[Bytes::from(hello)]).map_err(anyhow::Error::msg).and_then(|_| {
            rx.recv_timeout(START_TIMEOUT).map_err(|_| {
                anyhow::anyhow!(
                    "{}",
                    inner.gone.lock().unwrap().clone().unwrap_or_else(|| format!(
                        "the {} engine did not start within {} s",
                        self.engine,
                        START_TIMEOUT.as_secs()
                    ))
                )
            })
        });
        let m = match answer {
            Ok(m) => m,
            Err(e) => {
                self.shutdown(true);
                return Err(e);
            }
        };
        if m.json["op"] == "error" {
            self.shutdown(true);
            anyhow::bail!(
                "the {} engine did not start: {}",
                self.engine,
                m.json["message"].as_str().unwrap_or_default()
            );
        }
        self.describe = m.json["describe"].as_str().unwrap_or(self.engine).to_string();
        let pending = m.json["pending_parents"].as_bool().unwrap_or(false);
        inner.pending_parents.store(pending, Ordering::Relaxed);
        *inner.held.lock().unwrap() = Some(register_held(inner.clone()));
        tracing::info!("{} bridge started (pid {}): {}", self.engine, inner.pid, self.describe);
        let runner = m.json["runner"].as_str().unwrap_or_default();
        if m.json["in_process"].as_bool().unwrap_or(false) {
            tracing::info!("{}: tasks run inside the engine's workers ({})", self.engine, runner);
        } else if self.engine != "hyperqueue" {
            let line = format!(
                "{}: tasks run in a taps-worker process per engine worker thread: {} (scripts/install-engines.sh \
                 builds taps_native for this taps)",
                self.engine, runner
            );
            // Asked for and not there (not built, or of another build: after a pull, say): slower
            // than it could be, so said where the user looks; TAPS_IN_PROCESS=0 chose it.
            if in_process {
                tracing::warn!("{}", line);
            } else {
                tracing::info!("{}", line);
            }
        }
        Ok(())
    }

    fn needs_wire(&self) -> bool {
        true
    }

    /// A ready task goes to the bridge from the thread that submits it, and a completion is
    /// finished on the reader thread: no wake-up of the dispatcher thread on either way.
    fn direct(&self) -> bool {
        true
    }

    fn submit(&mut self, job: Job) {
        let Some(inner) = &self.inner else { return };
        let held = *inner.held.lock().unwrap();
        let key = format!("{}-{}", job.def.name, job.id);
        let run = ToWorker::Run { seq: job.seq, id: job.id, task: job.def.name.to_string(), args: Vec::new() }.encode();
        let mut head = run.header;
        head.pop(); // the empty argument list's length: the bridge appends the arguments
        let mut blobs = vec![Bytes::from(head)];
        let mut args = Vec::with_capacity(job.args.len());
        let mut error = None;
        for p in job.args {
            match WirePayload::from_payload(p) {
                Ok(WirePayload::Bytes(b)) => {
                    args.push(serde_json::json!({"blob": blobs.len()}));
                    blobs.push(b);
                }
                Ok(WirePayload::Ref(r)) => match held_key(&r) {
                    Some((id, k)) if Some(id) == held && inner.live.lock().unwrap().contains(k) => {
                        args.push(serde_json::json!({"dep": k}));
                    }
                    Some(_) => {
                        error = Some(TaskError::new(
                            ErrorKind::UnresolvedReference,
                            format!("{} is held by another engine", r.key),
                        ));
                    }
                    None => {
                        args.push(serde_json::json!({"slot": blobs.len()}));
                        blobs
                            .push(Bytes::from(postcard::to_stdvec(&SlotRef::Ref(&r)).expect("a reference serialises")));
                    }
                },
                Err(e) => error = Some(e),
            }
        }
        // Finished tasks no child can take as a pending parent any more (see `unheld`): dropped
        // after this submission, which may still name them.
        let release = std::mem::take(&mut *inner.unheld.lock().unwrap());
        {
            let mut live = inner.live.lock().unwrap();
            for k in &release {
                live.remove(k);
            }
            live.insert(key.clone());
        }
        let msg = serde_json::json!({"op": "submit", "seq": job.seq, "key": key, "args": args, "release": release});
        inner.running.lock().unwrap().insert(job.seq, key);
        let sent = match error {
            Some(e) => Err(e),
            None => inner.send(msg, &blobs).map_err(|e| TaskError::new(ErrorKind::WorkerLost, e)),
        };
        if let Err(e) = sent
            && inner.running.lock().unwrap().remove(&job.seq).is_some()
            && let Some(done) = &self.done
        {
            done.complete(Completion { seq: job.seq, outcome: Err(e), execution: None, worker: None });
        }
    }

    fn shutdown(&mut self, cancel: bool) {
        let Some(inner) = self.inner.take() else { return };
        if let Some(id) = inner.held.lock().unwrap().take() {
            release_held(id);
        }
        let release = std::mem::take(&mut *inner.unheld.lock().unwrap());
        let _ = inner.send(serde_json::json!({"op": "release", "keys": release}), &[]);
        let _ = inner.send(serde_json::json!({"op": "shutdown", "cancel": cancel}), &[]);
        inner.stdin.lock().unwrap().take(); // end of input: the bridge stops in any case
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while child.try_wait().ok().flatten().is_none() && inner.gone.lock().unwrap().is_none() {
                if Instant::now() > deadline {
                    tracing::warn!(
                        "the {} bridge did not stop within {} s: killing it",
                        self.engine,
                        STOP_TIMEOUT.as_secs()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Every process the engine started is in the bridge's group (the bridge is its
            // leader, not yet reaped, so the group id is still ours).
            // SAFETY: plain syscall on the group we created.
            unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
        if let Some(tmp) = self.tmp.take() {
            let path = tmp.path().to_path_buf();
            if let Err(e) = tmp.close() {
                tracing::warn!(
                    "cannot remove the {} engine's temporary directory {}: {}",
                    self.engine,
                    path.display(),
                    e
                );
            }
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        tracing::info!(
            target: "taps.run",
            "{} bridge: {} bytes came to the driver from the bridge",
            self.engine,
            inner.received.load(Ordering::Relaxed)
        );
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    /// The held reference of a running task: the engine resolves the dependency on its workers.
    fn pending_ref(&self, seq: u64) -> Option<DataRef> {
        let inner = self.inner.as_ref().filter(|i| i.pending_parents.load(Ordering::Relaxed))?;
        let id = (*inner.held.lock().unwrap())?;
        inner.running.lock().unwrap().get(&seq).map(|key| held_ref(id, key, 0))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.shutdown(true);
    }
}
