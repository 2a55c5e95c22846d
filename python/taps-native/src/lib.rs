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
        let done = guarded("Run", || {
            let run = ToWorker::decode(frame(&header, segments)).map_err(|e| error("Run", e))?;
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
        })?;
        let segments = done.segments.iter().map(|s| PyBytes::new(py, s)).collect();
        Ok((PyBytes::new(py, &done.header), segments))
    }
}

/// The build of taps this module runs tasks of (`taps::executor::bridge::build_id`): the bridge
/// uses it only for a driver of the same build.
#[pyfunction]
fn build_id() -> String {
    taps::executor::bridge::build_id()
}

#[pymodule]
fn taps_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Every task of every app, as in taps-worker; panics inside tasks are recorded, not printed.
    taps::catalogue::install();
    taps::engine::install_panic_hook();
    m.add_class::<Runner>()?;
    m.add_function(wrap_pyfunction!(build_id, m)?)?;
    Ok(())
}
