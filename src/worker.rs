//! The worker side of the [`protocol`]: what `taps-worker` runs.
//!
//! [`Worker::handle`] is the transport-free state machine (one message in, at most one reply
//! out); [`serve`] drives it over a byte stream, and [`main`] is the `taps-worker` command line.
//! The process-pool executor starts `taps-worker --pipe-fd N --heartbeat-fd M --heartbeat-interval S
//! --parent-pid P` with one end of a Unix socket pair on fd N and of another on fd M, on which a
//! thread of its own writes a byte every S seconds whatever the task does; stdin, stdout and
//! stderr stay free for the tasks.
//!
//! For batch systems that start one process per task, [`run_frame`] (`taps-worker run-frame
//! --input FILE|- --output FILE|-`) runs one task: it reads a `Hello` frame and a `Run` frame
//! (the [`protocol`]'s byte-stream layout, back to back), and writes the `Done` frame — which
//! carries the task's error if it failed (exit code 0 all the same). A bad `Hello` writes a
//! `Failed` frame and exits 2; bytes that are not two such frames give one error line and exit 2.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::data::DataLayer;
use crate::engine::{execute, hostname};
use crate::protocol::{
    self, Doorbell, Entry, Frame, FromWorker, Message, PROTOCOL_VERSION, ProtocolError, Side, ToWorker, WirePayload,
};
use crate::record::ExecutionInfo;
use crate::task::lookup;

/// What to do after a message.
#[derive(Debug)]
pub enum Step {
    /// Send this reply (if any) and go on.
    Continue(Option<FromWorker>),
    /// Send this reply (if any) and exit with this code.
    Exit(Option<FromWorker>, i32),
}

/// A worker's state: the data layer, once `Hello` has arrived.
#[derive(Default)]
pub struct Worker {
    data: Option<DataLayer>,
    name: String,
}

impl Worker {
    /// A worker waiting for `Hello`.
    pub fn new() -> Self {
        Worker::default()
    }

    /// Handles one message.
    pub fn handle(&mut self, msg: ToWorker) -> Step {
        match msg {
            ToWorker::Hello { version, data, name } => {
                if version != PROTOCOL_VERSION {
                    let message = ProtocolError::Version { worker: PROTOCOL_VERSION, driver: version }.to_string();
                    return Step::Exit(Some(FromWorker::Failed { message }), 2);
                }
                match DataLayer::from_spec(data) {
                    Ok(d) => {
                        self.data = Some(d);
                        self.name = name;
                        Step::Continue(Some(FromWorker::Ready { pid: std::process::id(), hostname: hostname().into() }))
                    }
                    Err(e) => Step::Exit(
                        Some(FromWorker::Failed { message: format!("cannot set up the data layer: {}", e) }),
                        2,
                    ),
                }
            }
            ToWorker::Run { seq, id, task, args } => {
                let Some(data) = &self.data else {
                    let message = ProtocolError::Unexpected("Run before Hello").to_string();
                    return Step::Exit(Some(FromWorker::Failed { message }), 2);
                };
                let (outcome, execution) = match lookup(&task) {
                    Ok(def) => execute(def, args.into_iter().map(Into::into).collect(), data, true, id),
                    Err(e) => (Err(e), ExecutionInfo { hostname: hostname().into(), ..Default::default() }),
                };
                let outcome = outcome.and_then(WirePayload::from_payload);
                Step::Continue(Some(FromWorker::Done { seq, outcome, execution }))
            }
            ToWorker::Shutdown => Step::Exit(None, 0),
        }
    }
}

/// Serves messages from `input`, replying on `output`, until `Shutdown` or end of input.
/// Returns the exit code.
/// Large results go to the driver as shared-memory segments (descriptors on the socket
/// `output`), which `input` must be a [`protocol::SpinRead`] to receive.
pub fn serve<R: Read, W: Write + std::os::fd::AsFd>(input: R, output: W) -> Result<i32, ProtocolError> {
    serve_ringing(input, output, None)
}

/// [`serve`] with the doorbell mapping `bell`: messages come from its ring to the worker (or
/// the socket, where an entry says so), and replies go in its ring to the driver
/// ([`Doorbell::put_frame`]) with its [`Side::ToDriver`] counter rung after each, so that a
/// driver polling the doorbell takes it at once. A reply the ring cannot take (more than
/// [`protocol::RING_INLINE_MAX`] bytes, or with shared-memory segments) goes through the socket:
/// up to [`WHOLE_MAX`] bytes written whole and then announced in the ring; larger ones announced
/// first, with the driver's reader woken to read while it is written.
pub fn serve_ringing<R: Read, W: Write + std::os::fd::AsFd>(
    input: R,
    output: W,
    bell: Option<&Doorbell>,
) -> Result<i32, ProtocolError> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let mut output = BufWriter::with_capacity(1 << 16, output);
    let mut worker = Worker::new();
    loop {
        let msg = match bell {
            Some(b) => next_from_driver(b, &mut input, output.get_ref().as_fd())?,
            None => protocol::recv::<ToWorker, _>(&mut input)?,
        };
        let Some(msg) = msg else {
            return Ok(0); // the driver closed the connection
        };
        let (reply, exit) = match worker.handle(msg) {
            Step::Continue(r) => (r, None),
            Step::Exit(r, code) => (r, Some(code)),
        };
        if let Some(r) = reply {
            let frame = r.encode();
            match bell {
                Some(b) if b.put_frame(Side::ToDriver, &frame) => b.ring_driver(),
                Some(b) if frame.socket_len() <= WHOLE_MAX => {
                    // The socket's buffer holds it: written whole, then announced, so that a thread
                    // waiting for results may read it too.
                    frame.write_to_socket(&mut output)?;
                    output.flush()?;
                    b.put_on_socket_waiting(Side::ToDriver, true);
                    b.ring_driver();
                }
                Some(b) => {
                    // It may not fit in the socket's buffer: announced first, and the reader
                    // thread woken to read while it is written (waiting threads leave it to it).
                    b.put_on_socket_waiting(Side::ToDriver, false);
                    b.ring_driver();
                    b.wake_reader();
                    frame.write_to_socket(&mut output)?;
                    output.flush()?;
                }
                None => {
                    frame.write_to_socket(&mut output)?;
                    output.flush()?;
                }
            }
        }
        if let Some(code) = exit {
            return Ok(code);
        }
    }
}

/// Replies of at most this many bytes on the socket are written whole before their ring entry
/// is put: the socket's buffer (4 MiB asked for, capped by the kernel's `net.core.wmem_max`,
/// 208 KiB by default) holds them.
const WHOLE_MAX: usize = 64 << 10;

/// How long a worker sleeps on its doorbell page at most before it looks at its socket's end
/// (the driver wakes it when it puts a frame in its ring, or shuts the socket down).
const SOCKET_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// The next message from the driver: from the ring of `bell` ([`Side::ToWorker`]), or from the
/// socket (`input`, whose descriptor is `fd`) when the ring's entry says so; `None` at the
/// socket's end. Polls the ring for the [polling budget](crate::spin::budget), then sleeps on
/// the page.
fn next_from_driver<R: Read>(
    bell: &Doorbell,
    input: &mut BufReader<R>,
    fd: std::os::fd::BorrowedFd<'_>,
) -> Result<Option<ToWorker>, ProtocolError> {
    let take = |input: &mut BufReader<R>, entry: Entry| match entry {
        Entry::Inline(bytes) => ToWorker::decode(Frame::from_bytes(bytes.into())?).map(Some),
        // A frame announced, or (no entry) the socket's end.
        Entry::OnSocket { .. } | Entry::Empty => protocol::recv::<ToWorker, _>(input),
    };
    loop {
        let seen = bell.rung(Side::ToWorker);
        match bell.next(Side::ToWorker, true)? {
            Entry::Empty => {}
            entry => return take(input, entry),
        }
        if crate::spin::until(crate::spin::budget(), || (bell.rung(Side::ToWorker) != seen).then_some(())).is_some() {
            continue;
        }
        // Nothing came while polling: has the driver gone? The socket before the ring: the
        // driver puts a frame's entry in the ring before it writes the frame to the socket, so
        // bytes seen here have their entry seen below (one system call per idle spell, not per
        // message).
        if readable_now(fd.as_raw_fd()) {
            let entry = bell.next(Side::ToWorker, true)?;
            return take(input, entry);
        }
        bell.sleep_worker(seen, SOCKET_CHECK);
    }
}

/// Whether `fd` has bytes to read, or its end, now.
fn readable_now(fd: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, no waiting.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

/// Runs the one task of `input` (a `Hello` frame, then a `Run` frame) and writes its `Done`
/// frame (or, for a bad `Hello`, a `Failed` frame) to `output`. Returns the exit code: 0 when a
/// `Done` frame was written, whether the task succeeded or not.
pub(crate) fn run_one<R: Read, W: Write>(input: R, mut output: W) -> Result<i32, ProtocolError> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let mut next = |what: &'static str| -> Result<ToWorker, ProtocolError> {
        protocol::recv::<ToWorker, _>(&mut input)?.ok_or(ProtocolError::Unexpected(what))
    };
    let hello = next("no frame (expected a Hello frame, then a Run frame)")?;
    if !matches!(hello, ToWorker::Hello { .. }) {
        return Err(ProtocolError::Unexpected("the first frame is not a Hello"));
    }
    let mut worker = Worker::new();
    let reply = match worker.handle(hello) {
        Step::Continue(_) => {
            let run = next("no Run frame after the Hello")?;
            if !matches!(run, ToWorker::Run { .. }) {
                return Err(ProtocolError::Unexpected("the second frame is not a Run"));
            }
            match worker.handle(run) {
                Step::Continue(r) | Step::Exit(r, _) => (r, 0),
            }
        }
        Step::Exit(r, code) => (r, code),
    };
    if let (Some(r), _) = &reply {
        protocol::send(&mut output, r.clone())?;
    }
    output.flush()?;
    Ok(reply.1)
}

/// `taps-worker run-frame`: one task from a file or stdin, its result to a file or stdout.
#[derive(clap::Parser, Debug)]
#[command(
    name = "taps-worker run-frame",
    about = "Runs one task: reads a Hello frame and a Run frame (taps::protocol's byte layout) and writes the Done frame \
             (it carries the task's error if the task failed; exit code 0). A bad Hello writes a Failed frame, exit code 2; \
             input that is not such frames: one error line, exit code 2"
)]
pub(crate) struct RunFrameArgs {
    /// File holding the Hello and Run frames, or - for stdin.
    #[arg(long, value_name = "FILE|-")]
    pub input: PathBuf,
    /// File to write the result frame to (replaced), or - for stdout.
    #[arg(long, value_name = "FILE|-")]
    pub output: PathBuf,
}

/// The subcommand of `taps-worker` that runs one task frame ([`run_frame`]).
pub(crate) const RUN_FRAME_COMMAND: &str = "run-frame";

/// Entry point of `taps-worker run-frame ARGS` (`argv[0]` is the subcommand); returns the exit code.
pub fn run_frame(argv: &[String]) -> i32 {
    use clap::Parser;
    let args = match RunFrameArgs::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let dash = |p: &PathBuf| p.as_os_str() == "-";
    let input: Box<dyn Read> = if dash(&args.input) {
        Box::new(io::stdin().lock())
    } else {
        match std::fs::File::open(&args.input) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("taps-worker: error: --input {}: {}", args.input.display(), e);
                return 2;
            }
        }
    };
    // The result is built in memory and written only once complete: no half-written file.
    let mut out = Vec::new();
    let code = match run_one(input, &mut out) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("taps-worker: error: --input {}: {}", args.input.display(), e);
            return 2;
        }
    };
    let written = if dash(&args.output) {
        io::stdout().lock().write_all(&out).and_then(|_| io::stdout().flush())
    } else {
        std::fs::write(&args.output, &out)
    };
    if let Err(e) = written {
        eprintln!("taps-worker: error: --output {}: {}", args.output.display(), e);
        return 1;
    }
    code
}

/// `taps-worker` command line.
#[derive(clap::Parser, Debug)]
#[command(
    name = "taps-worker",
    version,
    about = "Runs taps tasks for a driver process (started by taps), or a whole MPI job: mpirun -np N taps-worker -c FILE [taps run options]",
    after_help = "One task per process (batch systems): taps-worker run-frame --input FILE|- --output FILE|- reads a Hello \
                  frame and a Run frame and writes the result frame (see taps-worker run-frame --help)"
)]
pub(crate) struct WorkerArgs {
    /// Serve the process-pool protocol on this inherited socket file descriptor.
    #[arg(long, value_name = "FD")]
    pub pipe_fd: Option<i32>,
    /// Print the protocol version this worker speaks and exit (how taps checks a worker path).
    #[arg(long, hide = true)]
    pub protocol_version: bool,
    /// Send heartbeats on this inherited socket file descriptor.
    #[arg(long, value_name = "FD", requires = "pipe_fd")]
    pub heartbeat_fd: Option<i32>,
    /// A doorbell mapping (shared memory) on this inherited file descriptor: frames travel in
    /// its rings both ways (large ones through the socket, announced there).
    #[arg(long, value_name = "FD", requires = "pipe_fd")]
    pub doorbell_fd: Option<i32>,
    /// Seconds between heartbeats.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub heartbeat_interval: f64,
    /// Exit when this process (the driver) dies.
    #[arg(long, value_name = "PID")]
    pub parent_pid: Option<i32>,
}

/// The first argument that makes `taps` act as `taps-worker` (`taps worker ARGS`). Every worker
/// is started with it, so the worker program may be either binary.
pub(crate) const WORKER_COMMAND: &str = "worker";

/// Whether `argv` asks for the worker: `taps worker …`, or a program named `taps-worker…`.
pub(crate) fn is_worker_invocation(argv: &[String]) -> bool {
    let named = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n.to_string_lossy().starts_with("taps-worker"));
    named || argv.get(1).is_some_and(|a| a == WORKER_COMMAND)
}

/// Entry point of `taps-worker`; returns the exit code.
pub fn main(mut argv: Vec<String>) -> i32 {
    use clap::Parser;
    // `taps worker ARGS` and `taps-worker worker ARGS` are `taps-worker ARGS`.
    if argv.get(1).is_some_and(|a| a == WORKER_COMMAND) {
        argv.remove(1);
    }
    if argv.get(1).is_some_and(|a| a == RUN_FRAME_COMMAND) {
        return run_frame(&argv[1..]);
    }
    let args = match WorkerArgs::try_parse_from(&argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    if args.protocol_version {
        println!("{}", PROTOCOL_VERSION);
        return 0;
    }
    if let Some(parent) = args.parent_pid {
        // SAFETY: plain syscalls. SIGKILL when the thread that started us exits; if the driver is
        // already gone (we were re-parented before prctl took effect), do not outlive it.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            if libc::getppid() != parent {
                return 1;
            }
        }
    }
    if let Some(fd) = args.heartbeat_fd {
        let interval = std::time::Duration::try_from_secs_f64(args.heartbeat_interval)
            .unwrap_or(std::time::Duration::from_secs(1));
        if let Err(e) = start_heartbeat(fd, interval) {
            eprintln!("taps-worker: {}", e);
            return 1;
        }
    }
    match args.pipe_fd {
        Some(fd) => match serve_fd(fd, args.doorbell_fd) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("taps-worker: {}", e);
                1
            }
        },
        None => {
            eprintln!(
                "taps-worker: no connection given; it is started by `taps run --engine.executor process-pool` \
                 (with --pipe-fd FD), or as `mpirun -np N taps-worker -c FILE [taps run options]`"
            );
            2
        }
    }
}

/// Takes ownership of the inherited socket `fd` (named by `flag` in errors), close-on-exec.
fn inherited_socket(fd: i32, flag: &str) -> io::Result<std::os::unix::net::UnixStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only inspects the descriptor table.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::other(format!("{} {}: not an open file descriptor (3 or above)", flag, fd)));
    }
    // Processes the tasks start must not inherit it (the driver relies on seeing end-of-stream
    // when this process dies).
    // SAFETY: fd is open (checked above); setting FD_CLOEXEC has no other effect.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the driver handed this descriptor to us alone; nothing else in this process owns it.
    Ok(unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) })
}

/// Serves the protocol on the inherited socket `fd`, with the doorbell page `bell` if given.
fn serve_fd(fd: i32, bell: Option<i32>) -> Result<i32, String> {
    let stream = inherited_socket(fd, "--pipe-fd").map_err(|e| e.to_string())?;
    let sock = stream.try_clone().map_err(|e| e.to_string())?;
    let Some(bell) = bell else {
        return serve(protocol::SpinRead(sock), stream).map_err(|e| e.to_string());
    };
    let bell = std::sync::Arc::new(inherited_doorbell(bell).map_err(|e| format!("--doorbell-fd {}: {}", bell, e))?);
    serve_ringing(protocol::SpinRead(sock), stream, Some(&bell)).map_err(|e| e.to_string())
}

/// Maps the inherited doorbell page `fd` (close-on-exec from now on).
fn inherited_doorbell(fd: i32) -> io::Result<Doorbell> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only inspects the descriptor table.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::other("not an open file descriptor (3 or above)"));
    }
    // SAFETY: fd is open (checked above); setting FD_CLOEXEC has no other effect.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the driver handed this descriptor to us alone; nothing else in this process owns it.
    Doorbell::from_fd(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Starts the thread that writes a heartbeat byte to `fd` every `interval`, independently of the
/// task running; it stops when the driver's end is gone.
fn start_heartbeat(fd: i32, interval: std::time::Duration) -> io::Result<()> {
    let stream = inherited_socket(fd, "--heartbeat-fd")?;
    std::thread::Builder::new().name("taps-heartbeat".into()).spawn(move || {
        loop {
            // SAFETY: valid socket and buffer; MSG_NOSIGNAL avoids SIGPIPE once the driver is gone.
            let n = unsafe {
                libc::send(
                    stream.as_raw_fd(),
                    [0u8].as_ptr() as *const libc::c_void,
                    1,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n < 0
                && !matches!(io::Error::last_os_error().kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
            {
                return;
            }
            std::thread::sleep(interval);
        }
    })?;
    Ok(())
}
