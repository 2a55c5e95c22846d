//! Tasks: plain Rust functions registered under a stable name.
//!
//! A task is a type implementing [`Task`]: a name, a tuple of argument types, an output type and
//! a function. The name is what crosses process and node boundaries; every worker is the same
//! binary, so it finds the function in the [`registry`].
//!
//! ```
//! use taps::task::{Task, TaskError};
//!
//! pub struct Add;
//! impl Task for Add {
//!     const NAME: &'static str = "doc-add";
//!     type Args = (u64, u64);
//!     type Output = u64;
//!     fn run((a, b): (u64, u64)) -> Result<u64, TaskError> {
//!         Ok(a + b)
//!     }
//! }
//! assert_eq!(Add::run((2, 3)).unwrap(), 5);
//! ```
//!
//! Arguments are submitted as [`Arg`]s: a plain value, or a [`crate::engine::TaskFuture`] of an
//! earlier task (a dependency). [`Many`] marks a variable number of top-level arguments of one type
//! (the Python suite's `*args`), each of which may be a future.
//!
//! A failure is a [`TaskError`] of some [`ErrorKind`]; paths are [`FilePath`]s; a running task
//! learns its id and run directory from [`context`].

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};

use crate::engine::TaskFuture;

/// A value that can be a task argument or result: serialisable, sendable, cloneable.
pub trait Data: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Data for T {}

/// The class of a task error: the record's `exception.type`.
///
/// The engine's and executors' own failures have a variant each; an app's own error classes
/// (e.g. `LinAlgError`, or the Python exception names the failures app injects) are
/// [`Exception`](ErrorKind::Exception). Converting a string ([`ErrorKind::from`]) gives the
/// variant of that name, so `TaskError::new("WorkerLost", …)` and
/// `TaskError::new(ErrorKind::WorkerLost, …)` are the same error.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An error returned by a task body (`TaskError`), e.g. through `?` on an `anyhow::Error`.
    Task,
    /// The task body panicked (`TaskPanic`).
    Panic,
    /// The task did not run because a parent task failed (`ParentFailed`).
    ParentFailed,
    /// The worker running the task was lost (`WorkerLost`).
    WorkerLost,
    /// The task was cancelled before it started (`Cancelled`).
    Cancelled,
    /// The run was interrupted or stopped before the task finished (`Interrupted`).
    Interrupted,
    /// The engine was shut down before the task was submitted (`EngineShutdown`).
    EngineShutdown,
    /// No task of that name is registered in the worker's binary (`UnknownTask`).
    UnknownTask,
    /// The task got too few or too many arguments (`ArgumentError`).
    Argument,
    /// A value was not of the type the task expected (`TypeMismatch`).
    TypeMismatch,
    /// A stored value was not fetched before use (`UnresolvedReference`).
    UnresolvedReference,
    /// A value could not be serialised (`SerializationError`).
    Serialization,
    /// A value could not be deserialised (`DeserializationError`).
    Deserialization,
    /// A file-system or other I/O operation failed (`IoError`).
    Io,
    /// An external program failed: exit status, signal, or it could not start (`ProgramFailed`).
    ProgramFailed,
    /// Any other class, named by the app (e.g. `LinAlgError`, `ZeroDivisionError`).
    Exception(String),
}

impl ErrorKind {
    /// Every kind with a fixed name, with that name.
    const NAMED: &'static [(ErrorKind, &'static str)] = &[
        (ErrorKind::Task, "TaskError"),
        (ErrorKind::Panic, "TaskPanic"),
        (ErrorKind::ParentFailed, "ParentFailed"),
        (ErrorKind::WorkerLost, "WorkerLost"),
        (ErrorKind::Cancelled, "Cancelled"),
        (ErrorKind::Interrupted, "Interrupted"),
        (ErrorKind::EngineShutdown, "EngineShutdown"),
        (ErrorKind::UnknownTask, "UnknownTask"),
        (ErrorKind::Argument, "ArgumentError"),
        (ErrorKind::TypeMismatch, "TypeMismatch"),
        (ErrorKind::UnresolvedReference, "UnresolvedReference"),
        (ErrorKind::Serialization, "SerializationError"),
        (ErrorKind::Deserialization, "DeserializationError"),
        (ErrorKind::Io, "IoError"),
        (ErrorKind::ProgramFailed, "ProgramFailed"),
    ];

    /// The name written as the record's `exception.type`.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorKind::Exception(name) => name,
            kind => Self::NAMED.iter().find(|(k, _)| k == kind).map(|(_, n)| *n).expect("every fixed kind is named"),
        }
    }
}

impl From<&str> for ErrorKind {
    fn from(name: &str) -> Self {
        Self::NAMED
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| ErrorKind::Exception(name.to_string()))
    }
}

impl From<String> for ErrorKind {
    fn from(name: String) -> Self {
        ErrorKind::from(name.as_str())
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ErrorKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(ErrorKind::from)
    }
}

/// The parent task a [`ErrorKind::ParentFailed`] error is about, and the parent's error.
#[derive(Clone, Debug, PartialEq)]
pub struct FailedParent {
    /// The parent's task id (its `task_id` in `tasks.jsonl`).
    pub task_id: uuid::Uuid,
    /// The parent's task name.
    pub name: String,
    /// Why the parent failed.
    pub error: TaskError,
}

/// Why a task failed: the record's `exception` object (`type`, `message`, `traceback`).
///
/// A `ParentFailed` error also names the [`parent`](TaskError::parent) and wraps the parent's
/// error as its [`cause`](TaskError::cause) ([`std::error::Error::source`]); they stay in the
/// driver (they are not part of the record, whose message names them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    /// Error class, e.g. [`ErrorKind::Panic`] (`TaskPanic`), [`ErrorKind::WorkerLost`].
    #[serde(rename = "type")]
    pub kind: ErrorKind,
    /// Human-readable message.
    pub message: String,
    /// Where it happened (error chain or panic location); may be empty.
    pub traceback: String,
    /// For `ParentFailed`: the parent task that failed, with its error (shared down a chain).
    #[serde(skip)]
    pub parent: Option<Arc<FailedParent>>,
}

impl TaskError {
    /// An error of class `kind` (an [`ErrorKind`], or its name) with `message`.
    pub fn new(kind: impl Into<ErrorKind>, message: impl Into<String>) -> Self {
        TaskError { kind: kind.into(), message: message.into(), traceback: String::new(), parent: None }
    }

    /// An error of an app's own class `name` (e.g. `LinAlgError`), see [`ErrorKind::Exception`].
    pub fn exception(name: &str, message: impl Into<String>) -> Self {
        TaskError::new(name, message)
    }

    /// Sets the traceback.
    pub(crate) fn with_traceback(mut self, traceback: impl Into<String>) -> Self {
        self.traceback = traceback.into();
        self
    }

    /// The error of a task that did not run because its parent failed; `message` names the
    /// parent and the failure; the traceback is the parent's.
    pub(crate) fn parent_failed(parent: FailedParent, message: String) -> Self {
        let traceback = parent.error.traceback.clone();
        TaskError { kind: ErrorKind::ParentFailed, message, traceback, parent: Some(Arc::new(parent)) }
    }

    /// The error this one wraps: for `ParentFailed`, the parent's error.
    pub fn cause(&self) -> Option<&TaskError> {
        self.parent.as_deref().map(|p| &p.error)
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause().map(|c| c as &(dyn std::error::Error + 'static))
    }
}

impl From<anyhow::Error> for TaskError {
    fn from(e: anyhow::Error) -> Self {
        let chain: Vec<String> = e.chain().skip(1).map(|c| c.to_string()).collect();
        TaskError::new(ErrorKind::Task, e.to_string()).with_traceback(chain.join("\ncaused by: "))
    }
}

impl From<std::io::Error> for TaskError {
    fn from(e: std::io::Error) -> Self {
        TaskError::new(ErrorKind::Io, e.to_string())
    }
}

/// What a running task knows about itself: its id and the run directory, so it can choose its
/// own output paths. See [`context`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskContext {
    task_id: uuid::Uuid,
    run_dir: Option<Arc<Path>>,
}

impl TaskContext {
    /// A context for task `task_id` of the run in `run_dir` (made by the engine).
    pub fn new(task_id: uuid::Uuid, run_dir: Option<Arc<Path>>) -> Self {
        TaskContext { task_id, run_dir }
    }

    /// The task's id (its `task_id` in `tasks.jsonl`).
    pub fn task_id(&self) -> uuid::Uuid {
        self.task_id
    }

    /// The run directory; an error if the engine was built without one
    /// ([`crate::engine::EngineBuilder::run_dir`]).
    pub fn run_dir(&self) -> Result<&Path, TaskError> {
        self.run_dir.as_deref().ok_or_else(|| {
            TaskError::new(ErrorKind::Io, "this task has no run directory (the engine was built without one)")
        })
    }

    /// The task's own working directory `RUN_DIR/tasks/NAME`, `NAME` being `name` or the task id;
    /// created if missing.
    pub fn work_dir(&self, name: Option<&str>) -> Result<PathBuf, TaskError> {
        let id = self.task_id.to_string();
        let dir = self.run_dir()?.join("tasks").join(name.unwrap_or(&id));
        std::fs::create_dir_all(&dir)
            .map_err(|e| TaskError::new(ErrorKind::Io, format!("cannot create {}: {}", dir.display(), e)))?;
        Ok(dir)
    }
}

thread_local! {
    static CONTEXT: std::cell::RefCell<Option<TaskContext>> = const { std::cell::RefCell::new(None) };
}

/// The context of the task running on this thread (in the driver's thread pool or in a worker
/// process alike); `None` outside a task body.
pub fn context() -> Option<TaskContext> {
    CONTEXT.with(|c| c.borrow().clone())
}

/// Runs `f` with `context` as the current task's context (used by [`crate::engine::execute`]).
pub(crate) fn with_context<R>(context: Option<TaskContext>, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<TaskContext>);
    impl Drop for Reset {
        fn drop(&mut self) {
            CONTEXT.with(|c| *c.borrow_mut() = self.0.take());
        }
    }
    let _reset = Reset(CONTEXT.with(|c| c.replace(context)));
    f()
}

/// A task: a named function from `Args` to `Output`.
pub trait Task: Send + Sync + 'static {
    /// Stable name: recorded in `tasks.jsonl` and used to find the function on workers.
    const NAME: &'static str;
    /// Argument tuple; each element is one top-level argument ([`Many`] for several).
    type Args: TaskArgs;
    /// Result type.
    type Output: Data;
    /// The task body.
    fn run(args: Self::Args) -> Result<Self::Output, TaskError>;
}

/// A value in flight between driver and workers.
#[derive(Clone)]
pub enum Payload {
    /// An in-process value, moved by reference (thread-pool).
    Local(LocalValue),
    /// A serialised value (postcard).
    Bytes(bytes::Bytes),
    /// A reference to a value stored by a transformer.
    Ref(DataRef),
}

/// An in-process value with the function that serialises it if it must leave the process.
#[derive(Clone)]
pub struct LocalValue {
    /// The value.
    pub value: Arc<dyn Any + Send + Sync>,
    /// Serialises `value` (which must be the type this function was made for).
    pub encode: fn(&(dyn Any + Send + Sync)) -> Result<Vec<u8>, TaskError>,
    /// The length of `value` serialised.
    pub encoded_len: fn(&(dyn Any + Send + Sync)) -> Result<usize, TaskError>,
    /// Serialises `value` into a buffer of exactly [`encoded_len`](Self::encoded_len) bytes.
    pub encode_to: fn(&(dyn Any + Send + Sync), &mut [u8]) -> Result<(), TaskError>,
    /// Rust type name of `value` (for the `object-type` filter).
    pub type_name: &'static str,
}

/// A transformer's reference to a stored value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataRef {
    /// Where the value is (for `file`: the file path).
    pub key: String,
    /// Size of the stored serialised value in bytes.
    pub size: u64,
}

impl Payload {
    /// Wraps an in-process value.
    pub fn local<T: Data>(value: T) -> Payload {
        Payload::Local(LocalValue {
            value: Arc::new(value),
            encode: encode_any::<T>,
            encoded_len: encoded_len_any::<T>,
            encode_to: encode_to_any::<T>,
            type_name: std::any::type_name::<T>(),
        })
    }

    /// Serialises the value if it is in-process (a large one into shared memory,
    /// [`crate::shm`]); references stay references.
    pub(crate) fn into_wire(self) -> Result<Payload, TaskError> {
        match self {
            Payload::Local(l) => Ok(Payload::Bytes(crate::shm::encode(&l)?)),
            other => Ok(other),
        }
    }

    /// Decodes into `T` (clones a shared in-process value).
    pub fn decode<T: Data>(&self) -> Result<T, TaskError> {
        match self {
            Payload::Local(l) => l.value.downcast_ref::<T>().cloned().ok_or_else(|| {
                TaskError::new(
                    ErrorKind::TypeMismatch,
                    format!("expected a value of type {}", std::any::type_name::<T>()),
                )
            }),
            // A large payload is lent to the value, which may keep parts of it in place.
            Payload::Bytes(b) => crate::shm::decoding(b, || decode_bytes(b)),
            Payload::Ref(r) => {
                Err(TaskError::new(ErrorKind::UnresolvedReference, format!("reference {} was not resolved", r.key)))
            }
        }
    }

    /// Decodes into `T`, taking the value without a copy when this is its only holder.
    pub(crate) fn into_value<T: Data>(self) -> Result<T, TaskError> {
        match self {
            Payload::Local(l) => match Arc::downcast::<T>(l.value) {
                Ok(arc) => Ok(Arc::try_unwrap(arc).unwrap_or_else(|a| (*a).clone())),
                Err(_) => Err(TaskError::new(
                    "TypeMismatch",
                    format!("expected a value of type {}", std::any::type_name::<T>()),
                )),
            },
            other => other.decode(),
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Local(_) => f.write_str("Local(..)"),
            Payload::Bytes(b) => write!(f, "Bytes({} B)", b.len()),
            Payload::Ref(r) => write!(f, "Ref({:?})", r),
        }
    }
}

fn encode_any<T: Data>(v: &(dyn Any + Send + Sync)) -> Result<Vec<u8>, TaskError> {
    let v = v.downcast_ref::<T>().ok_or_else(|| TaskError::new(ErrorKind::TypeMismatch, "encode: wrong type"))?;
    encode(v)
}

fn encoded_len_any<T: Data>(v: &(dyn Any + Send + Sync)) -> Result<usize, TaskError> {
    let v = v.downcast_ref::<T>().ok_or_else(|| TaskError::new(ErrorKind::TypeMismatch, "encode: wrong type"))?;
    postcard::experimental::serialized_size(v).map_err(|e| TaskError::new(ErrorKind::Serialization, e.to_string()))
}

fn encode_to_any<T: Data>(v: &(dyn Any + Send + Sync), buf: &mut [u8]) -> Result<(), TaskError> {
    let v = v.downcast_ref::<T>().ok_or_else(|| TaskError::new(ErrorKind::TypeMismatch, "encode: wrong type"))?;
    let n = postcard::to_slice(v, buf).map_err(|e| TaskError::new(ErrorKind::Serialization, e.to_string()))?.len();
    if n != buf.len() {
        return Err(TaskError::new(ErrorKind::Serialization, format!("encoded {} bytes, expected {}", n, buf.len())));
    }
    Ok(())
}

/// Serialises a value in the wire format (postcard).
pub fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, TaskError> {
    postcard::to_stdvec(v).map_err(|e| TaskError::new(ErrorKind::Serialization, e.to_string()))
}

/// Deserialises a value from the wire format.
pub(crate) fn decode_bytes<T: DeserializeOwned>(b: &[u8]) -> Result<T, TaskError> {
    postcard::from_bytes(b)
        .map_err(|e| TaskError::new(ErrorKind::Deserialization, format!("{} (as {})", e, std::any::type_name::<T>())))
}

/// One top-level argument at submission: a value, or the future of an earlier task.
pub enum Arg<T> {
    /// A plain value.
    Value(T),
    /// The result of an earlier task (a dependency).
    Future(TaskFuture<T>),
}

impl<T> From<T> for Arg<T> {
    fn from(v: T) -> Self {
        Arg::Value(v)
    }
}

impl<T> From<&TaskFuture<T>> for Arg<T> {
    fn from(f: &TaskFuture<T>) -> Self {
        Arg::Future(f.clone())
    }
}

/// A variable number of top-level arguments of one type (Python's `*args`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Many<T>(pub Vec<T>);

/// A top-level argument slot after submission: a payload or a dependency.
pub enum Slot {
    /// A value ready to ship.
    Value(Payload),
    /// The output of an earlier task.
    Future(Arc<crate::engine::TaskCell>),
}

/// One element of a task's argument tuple.
pub trait ArgSlots: Sized {
    /// What the caller passes at submission.
    type Submit;
    /// Turns the submission into slots.
    fn push_slots(s: Self::Submit, out: &mut Vec<Slot>);
    /// Rebuilds the element from slots on the worker; `count` is the slot count of `Many`.
    fn take(it: &mut std::vec::IntoIter<Payload>, count: Option<usize>) -> Result<Self, TaskError>;
    /// Whether this element takes a variable number of slots.
    const VARIADIC: bool = false;
}

fn arg_slot<T: Data>(a: Arg<T>) -> Slot {
    match a {
        Arg::Value(v) => Slot::Value(Payload::local(v)),
        Arg::Future(f) => Slot::Future(f.cell().clone()),
    }
}

fn next_payload<T: Data>(it: &mut std::vec::IntoIter<Payload>) -> Result<T, TaskError> {
    it.next().ok_or_else(|| TaskError::new(ErrorKind::Argument, "too few arguments"))?.into_value()
}

macro_rules! scalar_args {
    ($($t:ty),*) => {$(
        impl ArgSlots for $t {
            type Submit = Arg<$t>;
            fn push_slots(s: Arg<$t>, out: &mut Vec<Slot>) { out.push(arg_slot(s)); }
            fn take(it: &mut std::vec::IntoIter<Payload>, _: Option<usize>) -> Result<Self, TaskError> { next_payload(it) }
        }
    )*};
}
scalar_args!(u8, u16, u32, u64, usize, i8, i16, i32, i64, f32, f64, bool, String, (), FilePath);

/// A file path as a task argument or result; crosses process boundaries as raw bytes, so any Unix
/// file name works (not only UTF-8 ones, which a `PathBuf` value would need). Submit a `PathBuf`
/// or `&Path` directly: `engine.submit::<T>((path.into(),))`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FilePath(pub PathBuf);

impl FilePath {
    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for FilePath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for FilePath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl From<PathBuf> for FilePath {
    fn from(p: PathBuf) -> Self {
        FilePath(p)
    }
}

impl From<&Path> for FilePath {
    fn from(p: &Path) -> Self {
        FilePath(p.to_path_buf())
    }
}

impl From<FilePath> for PathBuf {
    fn from(p: FilePath) -> Self {
        p.0
    }
}

impl From<PathBuf> for Arg<FilePath> {
    fn from(p: PathBuf) -> Self {
        Arg::Value(FilePath(p))
    }
}

impl From<&Path> for Arg<FilePath> {
    fn from(p: &Path) -> Self {
        Arg::Value(FilePath(p.to_path_buf()))
    }
}

impl Serialize for FilePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use std::os::unix::ffi::OsStrExt;
        s.serialize_bytes(self.0.as_os_str().as_bytes())
    }
}

impl<'de> Deserialize<'de> for FilePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use std::os::unix::ffi::OsStringExt;
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("path bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u8>, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = a.next_element()? {
                    v.push(b);
                }
                Ok(v)
            }
        }
        let bytes = d.deserialize_bytes(V)?;
        Ok(FilePath(PathBuf::from(std::ffi::OsString::from_vec(bytes))))
    }
}

/// Implements [`ArgSlots`] for a [`Data`] type so it can be a task argument.
#[macro_export]
macro_rules! task_arg {
    ($($t:ty),* $(,)?) => {$(
        impl $crate::task::ArgSlots for $t {
            type Submit = $crate::task::Arg<$t>;
            fn push_slots(s: Self::Submit, out: &mut Vec<$crate::task::Slot>) {
                $crate::task::push_arg(s, out)
            }
            fn take(
                it: &mut std::vec::IntoIter<$crate::task::Payload>,
                _: Option<usize>,
            ) -> Result<Self, $crate::task::TaskError> {
                $crate::task::take_arg(it)
            }
        }
    )*};
}

/// Used by [`task_arg!`].
pub fn push_arg<T: Data>(a: Arg<T>, out: &mut Vec<Slot>) {
    out.push(arg_slot(a))
}

/// Used by [`task_arg!`].
pub fn take_arg<T: Data>(it: &mut std::vec::IntoIter<Payload>) -> Result<T, TaskError> {
    next_payload(it)
}

impl<T: Data> ArgSlots for Vec<T> {
    type Submit = Arg<Vec<T>>;
    fn push_slots(s: Self::Submit, out: &mut Vec<Slot>) {
        out.push(arg_slot(s))
    }
    fn take(it: &mut std::vec::IntoIter<Payload>, _: Option<usize>) -> Result<Self, TaskError> {
        next_payload(it)
    }
}

impl<T: Data> ArgSlots for Option<T> {
    type Submit = Arg<Option<T>>;
    fn push_slots(s: Self::Submit, out: &mut Vec<Slot>) {
        out.push(arg_slot(s))
    }
    fn take(it: &mut std::vec::IntoIter<Payload>, _: Option<usize>) -> Result<Self, TaskError> {
        next_payload(it)
    }
}

/// Each element is one top-level argument (elements must not be variadic themselves).
impl<T: ArgSlots> ArgSlots for Many<T> {
    type Submit = Vec<T::Submit>;
    const VARIADIC: bool = true;
    fn push_slots(s: Self::Submit, out: &mut Vec<Slot>) {
        for x in s {
            T::push_slots(x, out);
        }
    }
    fn take(it: &mut std::vec::IntoIter<Payload>, count: Option<usize>) -> Result<Self, TaskError> {
        let n = count.unwrap_or(0);
        (0..n).map(|_| T::take(it, None)).collect::<Result<Vec<T>, _>>().map(Many)
    }
}

/// A read-only argument shared with its producer: in-process executors hand over the parent's
/// value without copying it (a plain `T` argument is cloned when the driver still holds the
/// parent's future); out of process it is an ordinary `T` on the wire.
#[derive(Debug)]
pub struct Shared<T>(pub Arc<T>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Data> Shared<T> {
    /// The value, without a copy if this is the last holder.
    pub(crate) fn into_inner(self) -> T {
        Arc::try_unwrap(self.0).unwrap_or_else(|a| (*a).clone())
    }
}

impl<T: Data> ArgSlots for Shared<T> {
    type Submit = Arg<T>;
    fn push_slots(s: Self::Submit, out: &mut Vec<Slot>) {
        out.push(arg_slot(s))
    }
    fn take(it: &mut std::vec::IntoIter<Payload>, _: Option<usize>) -> Result<Self, TaskError> {
        match it.next().ok_or_else(|| TaskError::new(ErrorKind::Argument, "too few arguments"))? {
            Payload::Local(l) => Arc::downcast::<T>(l.value).map(Shared).map_err(|_| {
                TaskError::new(
                    ErrorKind::TypeMismatch,
                    format!("expected a value of type {}", std::any::type_name::<T>()),
                )
            }),
            other => other.decode().map(|v| Shared(Arc::new(v))),
        }
    }
}

/// A task's whole argument tuple.
pub trait TaskArgs: Sized + Send + 'static {
    /// What the caller passes at submission (a tuple of [`Arg`]s).
    type Submit;
    /// Turns the submission into slots.
    fn into_slots(s: Self::Submit) -> Vec<Slot>;
    /// Rebuilds the tuple from `n` payloads on the worker.
    fn from_payloads(p: Vec<Payload>) -> Result<Self, TaskError>;
}

macro_rules! tuple_args {
    ($($name:ident),*) => {
        impl<$($name: ArgSlots + Send + 'static),*> TaskArgs for ($($name,)*) {
            type Submit = ($($name::Submit,)*);
            #[allow(non_snake_case, unused_mut)]
            fn into_slots(s: Self::Submit) -> Vec<Slot> {
                let ($($name,)*) = s;
                let mut out = Vec::new();
                $($name::push_slots($name, &mut out);)*
                out
            }
            #[allow(non_snake_case, unused_mut, unused_variables)]
            fn from_payloads(p: Vec<Payload>) -> Result<Self, TaskError> {
                let fixed = 0 $(+ if $name::VARIADIC { 0 } else { 1 })*;
                let variadic = p.len().checked_sub(fixed)
                    .ok_or_else(|| TaskError::new(ErrorKind::Argument, format!("expected at least {} arguments, got {}", fixed, p.len())))?;
                let mut it = p.into_iter();
                $(let $name = $name::take(&mut it, if $name::VARIADIC { Some(variadic) } else { None })?;)*
                if it.next().is_some() {
                    return Err(TaskError::new(ErrorKind::Argument, "too many arguments"));
                }
                Ok(($($name,)*))
            }
        }
    };
}
tuple_args!();
tuple_args!(A);
tuple_args!(A, B);
tuple_args!(A, B, C);
tuple_args!(A, B, C, D);
tuple_args!(A, B, C, D, E);
tuple_args!(A, B, C, D, E, F);
tuple_args!(A, B, C, D, E, F, G);
tuple_args!(A, B, C, D, E, F, G, H);

/// The type-erased form of a task, as kept in the registry.
pub struct TaskDef {
    /// The task's stable name.
    pub name: &'static str,
    /// Runs the task on payloads; returns an in-process payload.
    pub call: fn(Vec<Payload>) -> Result<Payload, TaskError>,
}

fn call_erased<T: Task>(p: Vec<Payload>) -> Result<Payload, TaskError> {
    let args = T::Args::from_payloads(p)?;
    T::run(args).map(Payload::local)
}

/// The erased definition of `T`.
pub fn def<T: Task>() -> TaskDef {
    TaskDef { name: T::NAME, call: call_erased::<T> }
}

/// All tasks of this binary, by name.
pub struct Registry {
    by_name: HashMap<&'static str, TaskDef>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry { by_name: HashMap::new() }
    }

    /// Adds task `T`; a second task with the same name is a programming error.
    pub fn add<T: Task>(&mut self) -> &mut Self {
        self.add_def(def::<T>())
    }

    /// Adds a hand-made definition (e.g. a wrapper that calls other tasks by name).
    pub(crate) fn add_def(&mut self, d: TaskDef) -> &mut Self {
        if let Some(prev) = self.by_name.insert(d.name, d) {
            panic!("two tasks are registered under the name {:?}", prev.name);
        }
        self
    }

    /// Looks a task up by name.
    pub fn get(&self, name: &str) -> Option<&TaskDef> {
        self.by_name.get(name)
    }

    /// Number of registered tasks.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no task is registered.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

static INSTALLED: OnceLock<Registry> = OnceLock::new();

/// Installs the registry of every task of this program: the harness builds it once at
/// start-up from the catalogue of apps (`taps::catalogue`), before any task runs, and every
/// process of a run (driver and workers) is the same program, so each finds the same tasks by
/// name. A second call is refused (the registry never changes while tasks run).
pub(crate) fn install_registry(r: Registry) -> Result<(), Registry> {
    INSTALLED.set(r)
}

/// The installed registry; before [`install_registry`], the engine's own tasks only (a
/// library user's unregistered tasks still run in process, see `engine::task_def`).
pub fn registry() -> &'static Registry {
    static BUILTIN: OnceLock<Registry> = OnceLock::new();
    INSTALLED.get().unwrap_or_else(|| {
        BUILTIN.get_or_init(|| {
            let mut r = Registry::new();
            crate::engine::register_builtin_tasks(&mut r);
            r
        })
    })
}

/// Looks a task up by name in [`registry`] (how workers find the function to run).
pub(crate) fn lookup(name: &str) -> Result<&'static TaskDef, TaskError> {
    registry()
        .get(name)
        .ok_or_else(|| TaskError::new("UnknownTask", format!("no task named {:?} in this binary", name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_path_round_trips_non_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let p = FilePath(PathBuf::from(std::ffi::OsString::from_vec(b"/tmp/a\xffb".to_vec())));
        let bytes = encode(&p).unwrap();
        assert_eq!(decode_bytes::<FilePath>(&bytes).unwrap(), p);
    }

    #[test]
    fn error_kinds_keep_their_record_names() {
        for name in ["TaskPanic", "ParentFailed", "WorkerLost", "Cancelled", "UnknownTask", "IoError", "LinAlgError"] {
            let kind = ErrorKind::from(name);
            assert_eq!(kind.as_str(), name);
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("{:?}", name));
            assert_eq!(serde_json::from_str::<ErrorKind>(&format!("{:?}", name)).unwrap(), kind);
        }
        assert_eq!(ErrorKind::from("WorkerLost"), ErrorKind::WorkerLost);
        assert_eq!(ErrorKind::from("LinAlgError"), ErrorKind::Exception("LinAlgError".into()));
        let e = TaskError::new("TaskPanic", "boom").with_traceback("at x");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json, serde_json::json!({"type": "TaskPanic", "message": "boom", "traceback": "at x"}));
    }
}
