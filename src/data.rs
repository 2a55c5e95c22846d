//! The data layer: filters decide which values leave the inline path, transformers move them
//! another way and pass a small [`DataRef`] instead.
//!
//! Applied to top-level task arguments (driver side, at dispatch) and results (worker side),
//! and resolved where a value is used (worker side for arguments, driver side in `result()`),
//! exactly as the Python suite's `TaskTransformer` does.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use regex::RegexSet;

use crate::options::{Options, Validate};
use crate::plugins::{Plugin, PluginOptions, Selected};
use crate::task::{DataRef, Payload, TaskError};

/// What a filter sees of a value.
pub struct Candidate<'a> {
    /// Rust type name of the value (empty if unknown, e.g. already serialised).
    pub type_name: &'a str,
    size: &'a dyn Fn() -> usize,
}

impl Candidate<'_> {
    /// Serialised size in bytes (computed on first use).
    pub fn size(&self) -> usize {
        (self.size)()
    }
}

/// Decides whether a value is moved by the transformer.
pub trait Filter: Send + Sync {
    /// True if the value should be transformed.
    fn passes(&self, c: &Candidate) -> bool;
}

/// What a stored value is to the run: it decides how long a transformer must keep it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A task's argument, stored by the driver: read once, by the task that takes it (a task
    /// sent again after a lost worker has not read it yet).
    Argument,
    /// A task's result, stored by a worker: read by the driver and by children, any number of
    /// times until it is [released](Transformer::release) (nothing can read it any more) or the
    /// run ends.
    Result,
}

/// Moves serialised values out of band.
pub trait Transformer: Send + Sync {
    /// Stores bytes and returns a reference.
    fn put(&self, bytes: &[u8], role: Role) -> Result<DataRef, TaskError>;
    /// Loads the bytes behind a reference.
    fn get(&self, r: &DataRef) -> Result<bytes::Bytes, TaskError>;
    /// Removes what the run stored (driver only).
    fn close(&self) -> Result<(), TaskError>;
    /// Removes a result nothing will read again (driver only, before close; any thread): its
    /// task's futures are dropped and the children that take it finished. Best effort (what it
    /// leaves, close removes). Default: kept until close.
    fn release(&self, _r: &DataRef) {}
    /// Removes an argument the driver stored, once its task finished (driver only, before
    /// close): no worker reads it again. Best effort. Default: kept until close.
    fn release_argument(&self, _r: &DataRef) {}
}

crate::options! {
    /// `never`: nothing is transformed.
    pub(crate) struct NeverOptions {}
}

crate::options! {
    /// `object-size`: transform values whose serialised size is in [min_size, max_size].
    pub(crate) struct ObjectSizeOptions {
        /// Smallest serialised size in bytes that is transformed (inclusive).
        min_size: u64 = 0,
        /// Largest serialised size in bytes that is transformed (inclusive; inf = no limit).
        max_size: f64 = f64::INFINITY,
    }
}

impl Validate for ObjectSizeOptions {}

crate::options! {
    /// `object-type`: transform values whose Rust type name matches a pattern.
    pub(crate) struct ObjectTypeOptions {
        /// Regular expressions searched in the value's Rust type name (e.g. `"Data$"`, `"Vec<u8>"`).
        patterns: Vec<String> = Vec::new(),
    }
}

crate::options! {
    /// `file`: values go through files in a directory on a (shared) filesystem.
    pub(crate) struct FileOptions {
        /// Directory for the files (default: `data/` inside the run directory); must be on a filesystem every worker sees.
        file_dir: Option<PathBuf> = None,
    }
}

struct Never;
impl Filter for Never {
    fn passes(&self, _: &Candidate) -> bool {
        false
    }
}

struct ObjectSize {
    min: u64,
    max: f64,
}
impl Filter for ObjectSize {
    fn passes(&self, c: &Candidate) -> bool {
        let s = c.size() as u64;
        s >= self.min && (s as f64) <= self.max
    }
}

struct ObjectType(RegexSet);
impl Filter for ObjectType {
    fn passes(&self, c: &Candidate) -> bool {
        self.0.is_match(c.type_name)
    }
}

/// A filter's typed options: they build the filter.
pub trait FilterConfig: PluginOptions {
    /// Builds the filter.
    fn get_filter(&self) -> Result<Box<dyn Filter>, String>;
}

/// A transformer's typed options: they build the transformer, on the driver (which creates what
/// the run stores into) or on a worker (which attaches to it).
pub trait TransformerConfig: PluginOptions {
    /// The driver's transformer for the run in `run_dir`, and the options that let a worker
    /// attach to it (e.g. with the directory the driver created).
    fn get_transformer(&self, run_dir: &Path) -> Result<(Box<dyn Transformer>, toml::Table), String>;
    /// A worker's transformer, from the options the driver sent.
    fn attach(&self) -> Result<Box<dyn Transformer>, String>;
    /// Checks what can be checked before the run directory exists.
    fn preflight(&self) -> Result<(), String> {
        Ok(())
    }
    /// Names it creates in the run directory, for the clash check of file names.
    fn run_dir_names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A filter plugin.
pub(crate) type FilterPlugin = Plugin<dyn FilterConfig>;
/// A transformer plugin.
pub(crate) type TransformerPlugin = Plugin<dyn TransformerConfig>;

/// Filter plugins.
pub static FILTERS: &[FilterPlugin] = &[
    crate::plugin!(dyn FilterConfig, NeverOptions, "never", "never transform anything (everything inline)"),
    crate::plugin!(
        dyn FilterConfig,
        ObjectSizeOptions,
        "object-size",
        "transform values whose serialised size is in [min-size, max-size] bytes"
    ),
    crate::plugin!(
        dyn FilterConfig,
        ObjectTypeOptions,
        "object-type",
        "transform values whose Rust type name matches one of the regex patterns"
    ),
];

/// Transformer plugins.
pub static TRANSFORMERS: &[TransformerPlugin] = &[
    crate::plugin!(
        dyn TransformerConfig,
        FileOptions,
        "file",
        "pass large values through files on a shared filesystem"
    ),
    crate::plugin!(
        dyn TransformerConfig,
        crate::redis_store::ProxyStoreOptions,
        "proxystore",
        "the Python suite's ProxyStore transformer with a Redis connector (runs as redis)"
    ),
    crate::plugin!(
        dyn TransformerConfig,
        crate::redis_store::RedisOptions,
        "redis",
        "pass large values through a Redis server as keys"
    ),
];

impl Validate for NeverOptions {}

impl FilterConfig for NeverOptions {
    fn get_filter(&self) -> Result<Box<dyn Filter>, String> {
        Ok(Box::new(Never))
    }
}

impl FilterConfig for ObjectSizeOptions {
    fn get_filter(&self) -> Result<Box<dyn Filter>, String> {
        Ok(Box::new(ObjectSize { min: self.min_size, max: self.max_size }))
    }
}

impl ObjectTypeOptions {
    fn set(&self) -> Result<RegexSet, String> {
        RegexSet::new(&self.patterns).map_err(|e| format!("engine.filter.patterns: invalid regular expression: {}", e))
    }
}

impl Validate for ObjectTypeOptions {
    fn validate(&self) -> Result<(), String> {
        self.set().map(|_| ())
    }
}

impl FilterConfig for ObjectTypeOptions {
    fn get_filter(&self) -> Result<Box<dyn Filter>, String> {
        Ok(Box::new(ObjectType(self.set()?)))
    }
}

impl Validate for FileOptions {}

impl TransformerConfig for FileOptions {
    /// The run's own directory: `data/` in the run directory, or `taps-<run name>/` under a
    /// given `file_dir`, removed with its contents at close.
    fn get_transformer(&self, run_dir: &Path) -> Result<(Box<dyn Transformer>, toml::Table), String> {
        let t = match &self.file_dir {
            Some(base) => {
                let base = std::path::absolute(base).map_err(|e| format!("engine.transformer.file_dir: {}", e))?;
                let run = run_dir.file_name().unwrap_or_default().to_string_lossy();
                FileTransformer::create(&base, &format!("taps-{}", run))
            }
            None => FileTransformer::create(run_dir, "data"),
        };
        let t = t.map_err(|e| format!("engine.transformer.file_dir: {}", e.message))?;
        let worker = FileOptions { file_dir: Some(t.dir.clone()) };
        Ok((Box::new(t), Options::to_table(&worker)))
    }

    fn attach(&self) -> Result<Box<dyn Transformer>, String> {
        let dir = self.file_dir.as_ref().ok_or("engine.transformer.file_dir was not resolved by the driver")?;
        Ok(Box::new(FileTransformer::attach(dir)))
    }

    fn preflight(&self) -> Result<(), String> {
        self.file_dir.as_deref().map_or(Ok(()), check_file_dir)
    }

    fn run_dir_names(&self) -> Vec<String> {
        if self.file_dir.is_none() { vec!["data".into()] } else { Vec::new() }
    }
}

/// Files named by UUID in one directory that belongs to this run alone.
///
/// The driver [creates](FileTransformer::create) the directory (never reusing an existing one)
/// and removes it, with everything in it, at [`close`](Transformer::close); workers
/// [attach](FileTransformer::attach) to it and remove nothing. Nothing else under the user's
/// `file-dir` is ever touched.
///
/// Files are recycled: a released large value's file (a result nothing reads any more, an
/// argument whose task finished) is moved into the run's `free/` subdirectory instead of being
/// deleted, and the next value stored, by any process, takes one from there (an atomic `rename`
/// back under a new name) and overwrites it in place: its pages are still in the page cache, so
/// the write is a plain copy instead of allocating and zeroing fresh pages. A reader that maps a
/// value holds a shared `flock` on its file as long as the mapping lives, and a file is
/// overwritten only under an exclusive one taken without waiting: a file still mapped anywhere
/// (a value the app keeps) is put back and left alone.
pub(crate) struct FileTransformer {
    dir: PathBuf,
    /// Set on the driver: the parents of the run's directory that it created (removed at close if empty).
    owned: Option<Vec<PathBuf>>,
}

/// The subdirectory of released files waiting to be reused.
const FREE: &str = "free";
/// At most this many files wait in `free/`, holding at most [`FREE_BYTES`]; more are deleted.
const FREE_FILES: usize = 16;
/// See [`FREE_FILES`].
const FREE_BYTES: u64 = 256 << 20;
/// Files a store tries to take from `free/` before it makes a new one.
const CLAIM_TRIES: usize = 4;

/// `flock` on `f` without waiting; false if another open file holds a conflicting lock.
fn try_flock(f: &std::fs::File, op: libc::c_int) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) { Ok(false) } else { Err(e) }
}

impl FileTransformer {
    /// Creates a new directory `base/name` for this run (`name-1`, `name-2`, … if taken), and any
    /// missing parents of it; all of them are removed at close.
    pub fn create(base: &Path, name: &str) -> Result<Self, TaskError> {
        let io = |what: &Path, e: std::io::Error| {
            TaskError::new("IoError", format!("cannot create {}: {}", what.display(), e))
        };
        let parents = crate::rundir::create_dir_all_tracked(base).map_err(|e| io(base, e))?;
        let dir = crate::rundir::create_unique(&base.join(name)).map_err(|e| {
            crate::rundir::remove_created(&parents);
            io(&base.join(name), e)
        })?;
        let t = FileTransformer { dir, owned: Some(parents) };
        // Without it files are deleted rather than recycled.
        if let Err(e) = std::fs::create_dir(t.free_dir()) {
            tracing::debug!(target: "taps.engine.transform", "cannot create {}: {}", t.free_dir().display(), e);
        }
        Ok(t)
    }

    /// Uses a directory the driver created (a worker's view).
    pub(crate) fn attach(dir: &Path) -> Self {
        FileTransformer { dir: dir.to_path_buf(), owned: None }
    }

    fn free_dir(&self) -> PathBuf {
        self.dir.join(FREE)
    }

    /// A released file taken from `free/` and renamed to `path`, locked exclusively (no reader
    /// maps it), or None.
    fn claim(&self, path: &Path) -> Option<std::fs::File> {
        let free = std::fs::read_dir(self.free_dir()).ok()?;
        for entry in free.flatten().take(CLAIM_TRIES) {
            let from = entry.path();
            // Atomic: of processes taking the same file, one wins; the others see it gone.
            if std::fs::rename(&from, path).is_err() {
                continue;
            }
            let f = std::fs::OpenOptions::new().write(true).open(path);
            match f.as_ref().map(|f| try_flock(f, libc::LOCK_EX)) {
                Ok(Ok(true)) => return f.ok(),
                _ => {
                    // Still mapped somewhere (or unusable): back to free/, or gone (a mapping
                    // keeps its pages either way).
                    drop(f);
                    if std::fs::rename(path, &from).is_err() {
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
        }
        None
    }

    /// Moves a released file of this run's directory into `free/` (deletes it when `free/` is
    /// full or the value small).
    fn recycle(&self, r: &DataRef) {
        let path = Path::new(&r.key);
        // Only a file of this run's own directory.
        if path.parent() != Some(self.dir.as_path()) {
            return;
        }
        if r.size >= crate::shm::MIN_SHARED as u64
            && let Some(name) = path.file_name()
            && self.free_room(r.size)
            && std::fs::rename(path, self.free_dir().join(name)).is_ok()
        {
            return;
        }
        if let Err(e) = std::fs::remove_file(path) {
            tracing::debug!(target: "taps.engine.transform", "cannot remove {}: {}", r.key, e);
        }
    }

    /// Whether `free/` has room for a file of `size` bytes.
    fn free_room(&self, size: u64) -> bool {
        let Ok(free) = std::fs::read_dir(self.free_dir()) else { return false };
        let (mut n, mut bytes) = (0, size);
        for e in free.flatten() {
            n += 1;
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            if n >= FREE_FILES || bytes > FREE_BYTES {
                return false;
            }
        }
        true
    }
}

impl Transformer for FileTransformer {
    /// Into a recycled file if `free/` has one no reader maps (overwritten in place), else a new one.
    fn put(&self, bytes: &[u8], _role: Role) -> Result<DataRef, TaskError> {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join(uuid::Uuid::new_v4().simple().to_string());
        let err = |e: std::io::Error| TaskError::new("IoError", format!("cannot write {}: {}", path.display(), e));
        let reused = if bytes.len() >= crate::shm::MIN_SHARED { self.claim(&path) } else { None };
        match reused {
            Some(f) => {
                f.write_all_at(bytes, 0).map_err(err)?;
                if f.metadata().map_err(err)?.len() != bytes.len() as u64 {
                    f.set_len(bytes.len() as u64).map_err(err)?;
                }
            }
            None => std::fs::write(&path, bytes).map_err(err)?,
        }
        Ok(DataRef { key: path.display().to_string(), size: bytes.len() as u64 })
    }

    /// A large value is mapped from its file (read in place from the page cache) under a shared
    /// lock held while the mapping lives; a small one is read.
    fn get(&self, r: &DataRef) -> Result<bytes::Bytes, TaskError> {
        let err = |e: std::io::Error| TaskError::new("IoError", format!("cannot read {}: {}", r.key, e));
        if r.size >= crate::shm::MIN_SHARED as u64 {
            let f = std::fs::File::open(&r.key).map_err(err)?;
            // Never contended: a value is read before it is released, a file rewritten after.
            if !try_flock(&f, libc::LOCK_SH).map_err(err)? {
                return Err(err(std::io::Error::other("locked by a writer")));
            }
            return crate::shm::map_file(f, r.size as usize).map_err(err);
        }
        std::fs::read(&r.key).map(bytes::Bytes::from).map_err(err)
    }

    /// Recycles the result's file: nothing reads it again, and a value still mapped from it
    /// stays valid (its reader's lock keeps the file from being rewritten).
    fn release(&self, r: &DataRef) {
        self.recycle(r);
    }

    /// Recycles the argument's file once its task finished.
    fn release_argument(&self, r: &DataRef) {
        self.recycle(r);
    }

    fn close(&self) -> Result<(), TaskError> {
        let Some(parents) = &self.owned else { return Ok(()) };
        // The run's own directory with everything in it, then the parents it created if empty.
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(TaskError::new("IoError", format!("cannot remove {}: {}", self.dir.display(), e)));
        }
        crate::rundir::remove_created(parents);
        Ok(())
    }
}

/// Checks, before the run starts, that the run could create its directory under `file_dir`:
/// the nearest existing ancestor is a directory this user can write to.
fn check_file_dir(base: &Path) -> Result<(), String> {
    let base =
        std::path::absolute(base).map_err(|e| format!("engine.transformer.file_dir {}: {}", base.display(), e))?;
    let existing = base.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let why = if !existing.is_dir() {
        Some(format!("{} is not a directory", existing.display()))
    } else {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(existing.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: a valid NUL-terminated path.
        let ok = unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
        (!ok).then(|| format!("{} is not writable ({})", existing.display(), std::io::Error::last_os_error()))
    };
    match why {
        None => Ok(()),
        Some(why) => Err(format!(
            "engine.transformer.file_dir {}: cannot create the run's directory there: {}; name a writable directory \
             on a filesystem every worker sees",
            base.display(),
            why
        )),
    }
}

/// The filter and transformer of one run, as sent to remote workers.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataSpec {
    /// Filter name and options (TOML text).
    pub filter: Option<(String, String)>,
    /// Transformer name and options (TOML text, as the driver's transformer gives them to workers).
    pub transformer: Option<(String, String)>,
    /// The run directory (tasks see it in their context).
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
}

/// Filter + transformer, applied as the Python suite's `TaskTransformer`.
#[derive(Default)]
pub struct DataLayer {
    filter: Option<Box<dyn Filter>>,
    transformer: Option<Box<dyn Transformer>>,
    spec: DataSpec,
    run_dir: Option<Arc<Path>>,
    /// Set at close: nothing is released after it.
    closed: std::sync::atomic::AtomicBool,
}

/// Bytes a value moved: inline and by reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Moved {
    /// Serialised bytes sent in messages.
    pub inline: u64,
    /// Bytes stored by the transformer.
    pub by_reference: u64,
}

impl std::ops::AddAssign for Moved {
    fn add_assign(&mut self, o: Moved) {
        self.inline += o.inline;
        self.by_reference += o.by_reference;
    }
}

impl Moved {
    /// What shipping `p` moves.
    pub fn of(p: &Payload) -> Moved {
        match p {
            Payload::Local(_) => Moved::default(),
            Payload::Bytes(b) => Moved { inline: b.len() as u64, by_reference: 0 },
            Payload::Ref(r) => Moved { inline: 0, by_reference: r.size },
        }
    }
}

fn toml_text(t: &toml::Table) -> String {
    toml::to_string(t).expect("a TOML table serialises")
}

impl DataLayer {
    /// No filter, no transformer: everything inline.
    pub fn none() -> Self {
        DataLayer::default()
    }

    /// The driver's layer for the run in `run_dir`; the transformer creates what the run stores
    /// into (removed at [`close`](DataLayer::close)), and the [`spec`](DataLayer::spec) lets
    /// workers attach to it.
    pub(crate) fn for_run(
        filter: Option<&Selected<dyn FilterConfig>>,
        transformer: Option<&Selected<dyn TransformerConfig>>,
        run_dir: &Path,
    ) -> Result<Self, String> {
        let mut spec = DataSpec { run_dir: Some(run_dir.to_path_buf()), ..Default::default() };
        let filter = match filter {
            None => None,
            Some(f) => {
                spec.filter = Some((f.name.clone(), toml_text(&f.options.to_table())));
                Some(f.options.get_filter()?)
            }
        };
        let transformer = match transformer {
            None => None,
            Some(t) => {
                let (tr, worker) = t.options.get_transformer(run_dir)?;
                spec.transformer = Some((t.name.clone(), toml_text(&worker)));
                Some(tr)
            }
        };
        Ok(DataLayer { filter, transformer, run_dir: Some(Arc::from(run_dir)), spec, ..Default::default() })
    }

    /// A worker's layer, from the spec the driver sent: the transformer attaches to what the
    /// driver created and never creates or removes anything.
    pub fn from_spec(spec: DataSpec) -> Result<Self, String> {
        fn options<K: ?Sized>(list: &[Plugin<K>], kind: &str, name: &str, text: &str) -> Result<Arc<K>, String> {
            let t: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
            (crate::plugins::find(kind, list, name)?.parse)(&t, &format!("engine.{}", kind))
        }
        let filter = match &spec.filter {
            None => None,
            Some((name, text)) => Some(options(FILTERS, "filter", name, text)?.get_filter()?),
        };
        let transformer = match &spec.transformer {
            None => None,
            Some((name, text)) => Some(options(TRANSFORMERS, "transformer", name, text)?.attach()?),
        };
        let run_dir = spec.run_dir.as_deref().map(Arc::from);
        Ok(DataLayer { filter, transformer, spec, run_dir, ..Default::default() })
    }

    /// Sets the run directory tasks see in their context (sent to workers with the spec).
    pub fn set_run_dir(&mut self, dir: &Path) {
        self.spec.run_dir = Some(dir.to_path_buf());
        self.run_dir = Some(Arc::from(dir));
    }

    /// The run directory, if the run has one.
    pub fn run_dir(&self) -> Option<&Arc<Path>> {
        self.run_dir.as_ref()
    }

    /// The spec to rebuild this layer in a worker.
    pub fn spec(&self) -> &DataSpec {
        &self.spec
    }

    /// Filter, then transformer. With `wire`, an untransformed value comes back serialised.
    pub fn transform(&self, p: Payload, role: Role, wire: bool) -> Result<Payload, TaskError> {
        let Some(tr) = &self.transformer else {
            return if wire { p.into_wire() } else { Ok(p) };
        };
        match p {
            Payload::Local(l) => {
                let encoded_len: OnceLock<Result<usize, TaskError>> = OnceLock::new();
                let size = || *encoded_len.get_or_init(|| (l.encoded_len)(&*l.value)).as_ref().unwrap_or(&0);
                let passes = match &self.filter {
                    None => true,
                    Some(f) => f.passes(&Candidate { type_name: l.type_name, size: &size }),
                };
                if passes {
                    // Encoded where large values are (a reused shared-memory segment, whose pages
                    // are already there), not into fresh memory, then stored from there.
                    let b = crate::shm::encode(&l)?;
                    let r = tr.put(&b, role)?;
                    tracing::trace!(target: "taps.engine.transform", "Transformed object (type={}) into identifier (type=DataRef)", l.type_name);
                    return Ok(Payload::Ref(r));
                }
                if wire { Payload::Local(l).into_wire() } else { Ok(Payload::Local(l)) }
            }
            Payload::Bytes(b) => {
                let len = b.len();
                let passes = match &self.filter {
                    None => true,
                    Some(f) => f.passes(&Candidate { type_name: "", size: &|| len }),
                };
                if !passes {
                    return Ok(Payload::Bytes(b));
                }
                let r = tr.put(&b, role)?;
                tracing::trace!(target: "taps.engine.transform", "Transformed object (type=bytes) into identifier (type=DataRef)");
                Ok(Payload::Ref(r))
            }
            r @ Payload::Ref(_) => Ok(r),
        }
    }

    /// Turns a reference back into bytes; other payloads pass through.
    pub fn resolve(&self, p: Payload) -> Result<Payload, TaskError> {
        match p {
            Payload::Ref(r) => match &self.transformer {
                Some(tr) => {
                    let b = tr.get(&r)?;
                    tracing::trace!(target: "taps.engine.transform", "Resolved identifier (type=DataRef) into object (type=bytes)");
                    Ok(Payload::Bytes(b))
                }
                None => Err(TaskError::new(
                    "UnresolvedReference",
                    format!("got a reference to {} but no transformer is configured here", r.key),
                )),
            },
            other => Ok(other),
        }
    }

    /// Releases a result nothing will read again ([`Transformer::release`]); nothing after close.
    pub fn release(&self, r: &DataRef) {
        if let Some(t) = &self.transformer
            && !self.closed.load(std::sync::atomic::Ordering::Acquire)
        {
            t.release(r);
        }
    }

    /// Releases an argument this layer stored whose task finished
    /// ([`Transformer::release_argument`]); nothing after close.
    pub fn release_argument(&self, r: &DataRef) {
        if let Some(t) = &self.transformer
            && !self.closed.load(std::sync::atomic::Ordering::Acquire)
        {
            t.release_argument(r);
        }
    }

    /// Removes what the transformer stored (driver, at engine shutdown).
    pub fn close(&self) -> Result<(), TaskError> {
        self.closed.store(true, std::sync::atomic::Ordering::Release);
        match &self.transformer {
            Some(t) => t.close(),
            None => Ok(()),
        }
    }
}
