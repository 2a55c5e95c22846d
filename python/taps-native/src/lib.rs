//! `taps_native`: the in-process task runner of the Python engines' workers (Ray, Parsl, Dask).
//!
//! An engine's worker imports this module and runs each taps task's `Run` frame in its own
//! process ([`Runner::run`]), instead of handing it to a `taps-worker` process over a Unix socket:
//! no second process, no socket round trip. It is the same worker code as `taps-worker`'s
//! ([`taps::worker::Worker`]): the same registry of tasks, data layer and `Done` frame, so the
//! records are the same. The GIL is released while the task runs. A task that fails or panics is
//! a `Done` frame with its error, as in `taps-worker`; a panic outside the task (a bug of the
//! runner) is a Python `RuntimeError`, which the engine reports as the task's failure — it never
//! takes the engine's worker down.

// Developers' documentation (`cargo doc --document-private-items`): links to private items.
#![allow(rustdoc::private_intra_doc_links)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use bytes::Bytes;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use taps::protocol::{Frame, FromWorker, Message, ToWorker};
use taps::worker::{Step, Worker};

/// A `Done` frame as Python gets it: (header, segments).
type PyFrame<'py> = (Bound<'py, PyBytes>, Vec<Bound<'py, PyBytes>>);

fn error(what: &str, e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(format!("taps_native: {}: {}", what, e))
}

/// Runs `f`, turning a panic into a `RuntimeError` (the engine's worker goes on).
fn guarded<T>(what: &str, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(error(what, format!("panicked: {}", taps::engine::panic_message(p.as_ref())))))
}

/// The frame of `header` and `segments` (the segments are Python's bytes, not copied).
fn frame(header: &[u8], segments: Vec<PyBackedBytes>) -> Frame {
    Frame { header: header.to_vec(), segments: segments.into_iter().map(Bytes::from_owner).collect() }
}

/// One worker's state (its data layer), set up by a `Hello` frame; runs `Run` frames.
#[pyclass]
struct Runner {
    worker: Mutex<Worker>,
}

#[pymethods]
impl Runner {
    /// A runner for the `Hello` frame `header` + `segments`; a `Hello` the worker refuses
    /// (another protocol version, a data layer it cannot set up) is a `RuntimeError` naming why.
    #[new]
    fn new(py: Python<'_>, header: PyBackedBytes, segments: Vec<PyBackedBytes>) -> PyResult<Self> {
        guarded("Hello", || {
            let hello = ToWorker::decode(frame(&header, segments)).map_err(|e| error("Hello", e))?;
            if !matches!(hello, ToWorker::Hello { .. }) {
                return Err(error("Hello", "the frame is not a Hello"));
            }
            let mut worker = Worker::new();
            match py.allow_threads(|| worker.handle(hello)) {
                Step::Continue(_) => Ok(Runner { worker: Mutex::new(worker) }),
                Step::Exit(Some(FromWorker::Failed { message }), _) => Err(error("Hello", message)),
                Step::Exit(..) => Err(error("Hello", "refused")),
            }
        })
    }

    /// Runs the `Run` frame `header` + `segments` (the GIL released meanwhile); returns its
    /// `Done` frame as (header, segments).
    fn run<'py>(&self, py: Python<'py>, header: PyBackedBytes, segments: Vec<PyBackedBytes>) -> PyResult<PyFrame<'py>> {
        let done = guarded("Run", || self.execute(py, frame(&header, segments)))?;
        let segments = done.segments.iter().map(|s| PyBytes::new(py, s)).collect();
        Ok((PyBytes::new(py, &done.header), segments))
    }

    /// Runs one task as Ray and Parsl pass it: `packed` and `rest` are `frames.ray_args`'
    /// arguments (a parent's value, `frames.pack_done`'s, in place of its future); returns the
    /// `Done` frame as `frames.pack_done` packs it: what `frames.ray_spec`, `run_header`,
    /// [`run`](Self::run) and `pack_done` do, in Rust (an `echo` task in a hot loop: 4.5-5 µs,
    /// against 13-18 µs through those Python functions). A failed parent raises
    /// `taps_bridge.frames.ParentFailed` (the task does not run).
    fn task<'py>(
        &self,
        py: Python<'py>,
        packed: PyBackedBytes,
        rest: Vec<PyBackedBytes>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let run = match run_frame(&packed, rest) {
            Ok(run) => run,
            Err(Unpacked::ParentFailed) => {
                let e = py.import("taps_bridge.frames")?.getattr("ParentFailed")?;
                return Err(PyErr::from_value(e.call1(("a parent task failed",))?));
            }
            Err(Unpacked::Malformed(why)) => return Err(error("Run", why)),
        };
        let done = guarded("Run", || self.execute(py, run))?;
        let mut out = Vec::with_capacity(DONE_PREFIX + done.len());
        out.push(1); // it ran in this process
        out.extend_from_slice(&std::process::id().to_le_bytes());
        done.append_to(&mut out);
        Ok(PyBytes::new(py, &out))
    }
}

impl Runner {
    /// Runs a `Run` frame (the GIL released meanwhile): its `Done` frame.
    fn execute(&self, py: Python<'_>, run: Frame) -> PyResult<Frame> {
        let run = ToWorker::decode(run).map_err(|e| error("Run", e))?;
        if !matches!(run, ToWorker::Run { .. }) {
            return Err(error("Run", "the frame is not a Run"));
        }
        let step = py.allow_threads(|| {
            let mut w = self.worker.lock().unwrap_or_else(|p| p.into_inner());
            w.handle(run)
        });
        match step {
            Step::Continue(Some(done @ FromWorker::Done { .. })) => Ok(done.encode()),
            Step::Continue(_) | Step::Exit(..) => Err(error("Run", "the worker gave no result")),
        }
    }
}

/// Bytes before the `Done` frame in a `frames.pack_done` value: whether the task ran in the
/// engine's worker process (u8), the pid that ran it (u32 LE).
const DONE_PREFIX: usize = 5;

/// Why `frames.ray_args`' arguments give no `Run` frame.
#[derive(Debug)]
enum Unpacked {
    /// A parent's `Done` frame is a failure.
    ParentFailed,
    Malformed(String),
}

/// Reads what `frames.ray_args` writes and the parents' results it names.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Unpacked> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| Unpacked::Malformed(format!("{} bytes are short", self.buf.len())))?;
        let v = &self.buf[self.at..end];
        self.at = end;
        Ok(v)
    }

    fn u32(&mut self) -> Result<usize, Unpacked> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize)
    }

    /// postcard's unsigned varint.
    fn varint(&mut self) -> Result<u64, Unpacked> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            n |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(Unpacked::Malformed("a varint longer than 64 bits".into()))
    }
}

/// postcard's unsigned varint of `n`, appended to `out`.
fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The `Run` frame of `frames.ray_args`' arguments: `packed` holds the header without its
/// argument list, one kind byte per argument (an inline segment `s` or slot `l`, one in `rest`
/// `S` or `L`, a parent `d`, whose `pack_done` value is in `rest`), the inline lengths, then the
/// inline values. A parent's successful `Done` gives its result slot (and segment), as
/// `frames.result_slot` does.
fn run_frame(packed: &[u8], rest: Vec<PyBackedBytes>) -> Result<Frame, Unpacked> {
    let mut r = Reader { buf: packed, at: 0 };
    let (hlen, n) = (r.u32()?, r.u32()?);
    let head = r.take(hlen)?;
    let kinds = r.take(n)?;
    let inline = kinds.iter().filter(|k| matches!(k, b's' | b'l')).count();
    let lens = (0..inline).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
    let (mut lens, mut rest) = (lens.into_iter(), rest.into_iter());
    let mut header = Vec::with_capacity(head.len() + 16);
    header.extend_from_slice(head);
    push_varint(&mut header, n as u64);
    let mut segments = Vec::new();
    let short = || Unpacked::Malformed("fewer arguments than kinds".into());
    for &k in kinds {
        let value = match k {
            b's' | b'l' => Bytes::copy_from_slice(r.take(lens.next().ok_or_else(short)?)?),
            b'S' | b'L' | b'd' => Bytes::from_owner(rest.next().ok_or_else(short)?),
            k => return Err(Unpacked::Malformed(format!("an argument of kind {:?}", k as char))),
        };
        match k {
            b's' | b'S' => {
                header.push(0);
                segments.push(value);
            }
            b'l' | b'L' => header.extend_from_slice(&value),
            _ => {
                let done =
                    value.get(DONE_PREFIX..).ok_or_else(|| Unpacked::Malformed("a parent's value is short".into()))?;
                let done = Frame::from_bytes(value.slice_ref(done)).map_err(|e| Unpacked::Malformed(e.to_string()))?;
                let mut d = Reader { buf: &done.header, at: 0 };
                if d.varint()? != 2 {
                    return Err(Unpacked::Malformed("a parent's result is not a Done frame".into()));
                }
                d.varint()?; // seq
                if d.take(1)?[0] != 0 {
                    return Err(Unpacked::ParentFailed);
                }
                let start = d.at;
                if d.varint()? == 0 {
                    // Bytes: the value is the frame's first segment.
                    let seg = done
                        .segments
                        .first()
                        .ok_or_else(|| Unpacked::Malformed("a parent's result has no segment".into()))?;
                    segments.push(seg.clone());
                } else {
                    // Ref(DataRef { key, size }).
                    let key = d.varint()? as usize;
                    d.take(key)?;
                    d.varint()?;
                }
                header.extend_from_slice(&done.header[start..d.at]);
            }
        }
    }
    Ok(Frame { header, segments })
}

/// The build of taps this module runs tasks of (`taps::executor::bridge::build_id`): the bridge
/// uses it only for a driver of the same build.
#[pyfunction]
fn build_id() -> String {
    taps::executor::bridge::build_id()
}

/// What a driver sends for task `task` (benchmarks and tests): the header of a `Hello` with the
/// default data layer, and the header of the task's `Run` frame without its argument list (as
/// the bridge's `submit` carries it).
#[pyfunction]
fn frames_for<'py>(py: Python<'py>, task: &str) -> (Bound<'py, PyBytes>, Bound<'py, PyBytes>) {
    let hello =
        ToWorker::Hello { version: taps::protocol::PROTOCOL_VERSION, data: Default::default(), name: "bench".into() };
    let mut run = ToWorker::Run { seq: 1, id: Default::default(), task: task.into(), args: Vec::new() }.encode().header;
    run.pop(); // the empty argument list's length
    (PyBytes::new(py, &hello.encode().header), PyBytes::new(py, &run))
}

#[pymodule]
fn taps_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Every task of every app, as in taps-worker; panics inside tasks are recorded, not printed.
    taps::catalogue::install();
    taps::engine::install_panic_hook();
    m.add_class::<Runner>()?;
    m.add_function(wrap_pyfunction!(build_id, m)?)?;
    m.add_function(wrap_pyfunction!(frames_for, m)?)?;
    Ok(())
}
