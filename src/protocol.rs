//! The driver ↔ worker protocol, shared by every out-of-process executor (process-pool, MPI,
//! bridges to other engines).
//!
//! # Messages
//!
//! The driver sends [`ToWorker`], the worker answers with [`FromWorker`]:
//!
//! ```text
//! driver                                   worker
//!   Hello{version, data spec, name}  ──►     rebuilds the DataLayer from the spec
//!                                    ◄──   Ready{pid, hostname}   (or Failed{message}, then exits)
//!   Run{seq, task, args}             ──►     engine::execute(lookup(task), args, data, wire=true)
//!   Run{...}  (a few may be queued)  ──►
//!                                    ◄──   Done{seq, outcome, execution}   (in the order of Run)
//!   Shutdown                         ──►     exits 0 (end of stream does the same)
//! ```
//!
//! Task arguments and results are [`WirePayload`]s: postcard bytes, or a transformer's
//! [`DataRef`]. The worker runs one task at a time, in the order received.
//!
//! # Frames
//!
//! A message is encoded as a [`Frame`]: a small postcard header plus the payload bytes as
//! separate *segments*, so a 100 MB argument is never copied into a message buffer; it is written
//! straight from its `Bytes` and read straight into its own allocation. On a byte stream
//! (socket, pipe) a frame is laid out as
//!
//! ```text
//! u32 LE  header length H
//! u32 LE  segment count N
//! N × u64 LE  segment lengths (top bit set: the segment is shared memory, not in the stream)
//! H bytes  postcard header (the message, each payload replaced by a placeholder)
//! segments, in order (those in the stream)
//! ```
//!
//! A large payload is usually a [shared-memory segment](crate::shm) already (it was encoded
//! into one): [`Frame::write_to_socket`] passes such segments as descriptors beside the prefix,
//! and [`Frame::read_from`] over a [`SpinRead`] maps them, so their bytes never go through the
//! socket. [`Frame::write_to`] / [`Frame::read_from`] work over any `Write` / `Read`;
//! [`Frame::to_vec`] / [`Frame::from_bytes`] give the same layout as one buffer, for transports
//! that move whole messages (MPI); `from_bytes` slices the segments without copying.
//!
//! ```
//! use taps::protocol::{Frame, Message, ToWorker, WirePayload};
//!
//! let msg = ToWorker::Run { seq: 7, id: Default::default(), task: "echo".into(), args: vec![WirePayload::Bytes(vec![1, 2, 3].into())] };
//! let mut buf = Vec::new();
//! msg.clone().encode().write_to(&mut buf).unwrap();
//! let back = ToWorker::decode(Frame::read_from(&mut &buf[..]).unwrap().unwrap()).unwrap();
//! assert_eq!(back, msg);
//! ```

use std::io::{self, Read, Write};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::data::DataSpec;
use crate::record::ExecutionInfo;
use crate::task::{DataRef, Payload, TaskError};

/// Protocol version; a worker refuses a `Hello` with another version. 4: process-pool workers
/// are started with `--doorbell-fd` (a [`Doorbell`] page), which a version-3 worker rejects.
/// 5: the driver's reader sleeps on the doorbell page, which a worker must wake
/// ([`Doorbell::ring_driver`]).
pub const PROTOCOL_VERSION: u32 = 6;

/// Largest header accepted (headers hold names and references, never payload bytes).
const MAX_HEADER: usize = 64 << 20;
/// Largest number of segments in one frame.
const MAX_SEGMENTS: usize = 1 << 20;
/// Marks a segment length whose bytes are in a shared-memory segment passed beside the frame
/// (a descriptor on a socket, a name in an MPI message) rather than in the frame.
pub(crate) const SHARED: u64 = 1 << 63;

/// A task argument or result as it crosses a process boundary.
#[derive(Clone, Debug, PartialEq)]
pub enum WirePayload {
    /// Serialised value (postcard), sent inline.
    Bytes(Bytes),
    /// Reference to a value stored by the transformer.
    Ref(DataRef),
}

impl WirePayload {
    /// The wire form of `p`; in-process values must be serialised first ([`Payload::into_wire`]).
    pub(crate) fn from_payload(p: Payload) -> Result<WirePayload, TaskError> {
        match p.into_wire()? {
            Payload::Bytes(b) => Ok(WirePayload::Bytes(b)),
            Payload::Ref(r) => Ok(WirePayload::Ref(r)),
            Payload::Local(_) => unreachable!("into_wire serialises local values"),
        }
    }
}

impl From<WirePayload> for Payload {
    fn from(w: WirePayload) -> Payload {
        match w {
            WirePayload::Bytes(b) => Payload::Bytes(b),
            WirePayload::Ref(r) => Payload::Ref(r),
        }
    }
}

/// Driver → worker.
#[derive(Clone, Debug, PartialEq)]
pub enum ToWorker {
    /// First message: how to rebuild the data layer, and the worker's name for logs.
    Hello {
        /// [`PROTOCOL_VERSION`] of the driver.
        version: u32,
        /// The run's filter, transformer and directory.
        data: DataSpec,
        /// The name the driver uses for this worker.
        name: String,
    },
    /// Run a registered task.
    Run {
        /// Echoed in `Done`.
        seq: u64,
        /// The task's id (its record's `task_id`; the task sees it in its context).
        id: uuid::Uuid,
        /// Registered task name.
        task: String,
        /// Top-level arguments.
        args: Vec<WirePayload>,
    },
    /// Finish and exit.
    Shutdown,
}

/// Worker → driver.
#[derive(Clone, Debug, PartialEq)]
pub enum FromWorker {
    /// Answer to `Hello`: the worker is ready for tasks.
    Ready {
        /// Worker process id.
        pid: u32,
        /// Host the worker runs on.
        hostname: String,
    },
    /// The worker cannot serve (bad `Hello`); it exits after sending this.
    Failed {
        /// Why.
        message: String,
    },
    /// A task ended.
    Done {
        /// The `Run`'s sequence number.
        seq: u64,
        /// Result or error.
        outcome: Result<WirePayload, TaskError>,
        /// Worker-side timings.
        execution: ExecutionInfo,
    },
}

/// A message that can be framed.
pub trait Message: Sized {
    /// Header + segments.
    fn encode(self) -> Frame;
    /// Rebuilds the message from a frame.
    fn decode(f: Frame) -> Result<Self, ProtocolError>;
}

/// What can go wrong between a driver and a worker. Each variant formats as one line; callers
/// add who they were talking to.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The connection failed, or ended in the middle of a frame (the peer died).
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// Bytes that are not a frame: implausible lengths, truncated, trailing bytes.
    #[error("protocol error: {0}")]
    Frame(String),
    /// A frame whose header does not decode as a message, or does not match its segments.
    #[error("protocol error: {0}")]
    Message(String),
    /// The peer speaks another protocol version.
    #[error(
        "taps-worker speaks protocol version {worker} but the driver speaks {driver}; use the taps-worker built \
         with this taps"
    )]
    Version {
        /// This worker's [`PROTOCOL_VERSION`].
        worker: u32,
        /// The driver's.
        driver: u32,
    },
    /// A message out of place (e.g. `Run` before `Hello`).
    #[error("protocol error: {0}")]
    Unexpected(&'static str),
}

impl ProtocolError {
    /// Whether the peer sent something wrong (as opposed to the connection failing).
    #[cfg(test)]
    fn is_malformed(&self) -> bool {
        !matches!(self, ProtocolError::Io(_))
    }
}

/// An encoded message: postcard header and payload segments.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    /// Postcard-encoded header.
    pub header: Vec<u8>,
    /// Payload bytes, in placeholder order.
    pub segments: Vec<Bytes>,
}

impl Frame {
    /// Total encoded length (prefix, header, segments).
    pub fn len(&self) -> usize {
        8 + 8 * self.segments.len() + self.header.len() + self.segments.iter().map(Bytes::len).sum::<usize>()
    }

    /// Never true: a frame always has its prefix.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Bytes that [`write_to_socket`](Self::write_to_socket) writes to the socket: all but the
    /// shared-memory segments (they travel as descriptors).
    pub fn socket_len(&self) -> usize {
        let shared: usize = self.shared_segments().iter().map(|(i, _)| self.segments[*i].len()).sum();
        self.len() - shared
    }

    /// Bytes of payload segments.
    pub(crate) fn payload_len(&self) -> usize {
        self.segments.iter().map(Bytes::len).sum()
    }

    fn prefix(&self) -> Vec<u8> {
        self.prefix_with(&[])
    }

    /// The prefix; segments whose index is in `shared` are marked [`SHARED`] (they travel as
    /// descriptors).
    fn prefix_with(&self, shared: &[usize]) -> Vec<u8> {
        let mut p = Vec::with_capacity(8 + 8 * self.segments.len() + self.header.len());
        self.write_prefix(shared, &mut p);
        p
    }

    /// Appends the prefix (see [`prefix_with`](Self::prefix_with)) to `p`.
    fn write_prefix(&self, shared: &[usize], p: &mut Vec<u8>) {
        p.extend_from_slice(&(self.header.len() as u32).to_le_bytes());
        p.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        for (i, s) in self.segments.iter().enumerate() {
            let flag = if shared.contains(&i) { SHARED } else { 0 };
            p.extend_from_slice(&(s.len() as u64 | flag).to_le_bytes());
        }
        p.extend_from_slice(&self.header);
    }

    /// The segments that are [shared-memory segments](crate::shm::segment_of) (at most
    /// [`MAX_FDS`](crate::shm::MAX_FDS)), by index.
    pub(crate) fn shared_segments(&self) -> Vec<(usize, std::sync::Arc<crate::shm::Segment>)> {
        let mut v = Vec::new();
        for (i, s) in self.segments.iter().enumerate() {
            if v.len() == crate::shm::MAX_FDS {
                break;
            }
            if let Some(seg) = crate::shm::segment_of(s) {
                v.push((i, seg));
            }
        }
        v
    }

    /// Writes the frame to a Unix stream socket through its buffered writer `out` (does not
    /// flush): shared-memory segments travel as descriptors (`SCM_RIGHTS`) with the frame's
    /// prefix, the rest as with [`write_to`](Self::write_to). The reader must read with
    /// [`SpinRead`] (which keeps the descriptors) and [`read_from`](Self::read_from).
    pub fn write_to_socket<S: Write + std::os::fd::AsFd>(&self, out: &mut io::BufWriter<S>) -> io::Result<()> {
        let shared = self.shared_segments();
        if shared.is_empty() {
            return self.write_to(out);
        }
        out.flush()?;
        let prefix = self.prefix_with(&shared.iter().map(|(i, _)| *i).collect::<Vec<_>>());
        for (_, s) in &shared {
            s.sent();
        }
        let fds: Vec<_> = shared.iter().map(|(_, s)| s.fd()).collect();
        let sent = crate::shm::send_with_fds(out.get_ref().as_fd(), &prefix, &fds)?;
        out.write_all(&prefix[sent..])?;
        for (i, s) in self.segments.iter().enumerate() {
            if !shared.iter().any(|(j, _)| *j == i) {
                out.write_all(s)?;
            }
        }
        Ok(())
    }

    /// Writes the frame (does not flush). Segments are written from their buffers, uncopied.
    pub fn write_to<W: Write + ?Sized>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(&self.prefix())?;
        for s in &self.segments {
            w.write_all(s)?;
        }
        Ok(())
    }

    /// Reads one frame; `Ok(None)` at a clean end of stream (before the first byte of a frame).
    pub fn read_from<R: Read + ?Sized>(r: &mut R) -> Result<Option<Frame>, ProtocolError> {
        let mut head = [0u8; 8];
        let mut got = 0;
        while got < head.len() {
            match r.read(&mut head[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let (hlen, nseg) = parse_head(&head)?;
        let mut lens = vec![0u8; 8 * nseg];
        r.read_exact(&mut lens)?;
        let mut header = vec![0u8; hlen];
        r.read_exact(&mut header)?;
        let mut segments = Vec::with_capacity(nseg);
        for c in lens.chunks_exact(8) {
            let raw = u64::from_le_bytes(c.try_into().unwrap());
            if raw & SHARED != 0 {
                let len = seg_len(&(raw & !SHARED).to_le_bytes())?;
                let fd = crate::shm::take_received()
                    .ok_or_else(|| ProtocolError::Frame("a shared-memory segment without its descriptor".into()))?;
                let seg = crate::shm::Segment::receive(fd, len)
                    .map_err(|e| ProtocolError::Frame(format!("cannot map a shared-memory segment: {}", e)))?;
                segments.push(seg);
                continue;
            }
            let len = seg_len(c)?;
            // Read into uninitialised capacity: no zeroing pass over large payloads.
            let mut buf = Vec::with_capacity(len);
            r.take(len as u64).read_to_end(&mut buf)?;
            if buf.len() != len {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            segments.push(Bytes::from(buf));
        }
        Ok(Some(Frame { header, segments }))
    }

    /// The frame as one buffer (for transports that send whole messages).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.append_to(&mut v);
        v
    }

    /// Appends the frame as [`to_vec`](Self::to_vec) gives it to `out` (after what a transport
    /// puts before it, with no second copy).
    pub fn append_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.len());
        self.write_prefix(&[], out);
        for s in &self.segments {
            out.extend_from_slice(s);
        }
    }

    /// Parses a frame from one buffer; the segments share `buf` (no copy).
    pub fn from_bytes(buf: Bytes) -> Result<Frame, ProtocolError> {
        let short = || ProtocolError::Frame(format!("frame truncated ({} bytes)", buf.len()));
        if buf.len() < 8 {
            return Err(short());
        }
        let (hlen, nseg) = parse_head(&buf[..8])?;
        let mut at = 8;
        let lens_end = at + 8 * nseg;
        if buf.len() < lens_end + hlen {
            return Err(short());
        }
        let lens: Vec<usize> = buf[at..lens_end].chunks_exact(8).map(seg_len).collect::<Result<_, _>>()?;
        at = lens_end;
        let header = buf[at..at + hlen].to_vec();
        at += hlen;
        let mut segments = Vec::with_capacity(nseg);
        for len in lens {
            if buf.len() - at < len {
                return Err(short());
            }
            segments.push(buf.slice(at..at + len));
            at += len;
        }
        if at != buf.len() {
            return Err(ProtocolError::Frame(format!("{} trailing bytes after the frame", buf.len() - at)));
        }
        Ok(Frame { header, segments })
    }
}

fn parse_head(h: &[u8]) -> Result<(usize, usize), ProtocolError> {
    let hlen = u32::from_le_bytes(h[0..4].try_into().unwrap()) as usize;
    let nseg = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
    if hlen > MAX_HEADER || nseg > MAX_SEGMENTS {
        return Err(ProtocolError::Frame(format!("implausible frame (header {} bytes, {} segments)", hlen, nseg)));
    }
    Ok((hlen, nseg))
}

fn seg_len(c: &[u8]) -> Result<usize, ProtocolError> {
    let n = u64::from_le_bytes(c.try_into().unwrap());
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| ProtocolError::Frame(format!("segment of {} bytes", n)))
}

/// A payload in a header: inline bytes are the next segment.
#[derive(Serialize, Deserialize)]
enum Slot {
    Segment,
    Ref(DataRef),
}

fn slot(p: WirePayload, segments: &mut Vec<Bytes>) -> Slot {
    match p {
        WirePayload::Bytes(b) => {
            segments.push(b);
            Slot::Segment
        }
        WirePayload::Ref(r) => Slot::Ref(r),
    }
}

fn unslot(s: Slot, segments: &mut std::vec::IntoIter<Bytes>) -> Result<WirePayload, ProtocolError> {
    match s {
        Slot::Segment => segments
            .next()
            .map(WirePayload::Bytes)
            .ok_or_else(|| ProtocolError::Message("frame has fewer segments than its header names".into())),
        Slot::Ref(r) => Ok(WirePayload::Ref(r)),
    }
}

#[derive(Serialize, Deserialize)]
enum ToHeader {
    Hello { version: u32, data: DataSpec, name: String },
    Run { seq: u64, id: uuid::Uuid, task: String, args: Vec<Slot> },
    Shutdown,
}

#[derive(Serialize, Deserialize)]
enum FromHeader {
    Ready { pid: u32, hostname: String },
    Failed { message: String },
    Done { seq: u64, outcome: Result<Slot, TaskError>, execution: ExecutionInfo },
}

fn header<T: Serialize>(h: &T) -> Vec<u8> {
    postcard::to_stdvec(h).expect("protocol headers always serialise")
}

fn parse<T: for<'de> Deserialize<'de>>(f: &Frame) -> Result<T, ProtocolError> {
    postcard::from_bytes(&f.header).map_err(|e| ProtocolError::Message(format!("bad header: {}", e)))
}

fn check_done(rest: std::vec::IntoIter<Bytes>) -> Result<(), ProtocolError> {
    if rest.len() != 0 {
        return Err(ProtocolError::Message(format!("frame has {} unused segments", rest.len())));
    }
    Ok(())
}

impl Message for ToWorker {
    fn encode(self) -> Frame {
        let mut segments = Vec::new();
        let h = match self {
            ToWorker::Hello { version, data, name } => ToHeader::Hello { version, data, name },
            ToWorker::Run { seq, id, task, args } => {
                ToHeader::Run { seq, id, task, args: args.into_iter().map(|a| slot(a, &mut segments)).collect() }
            }
            ToWorker::Shutdown => ToHeader::Shutdown,
        };
        Frame { header: header(&h), segments }
    }

    fn decode(f: Frame) -> Result<Self, ProtocolError> {
        let h: ToHeader = parse(&f)?;
        let mut segs = f.segments.into_iter();
        let m = match h {
            ToHeader::Hello { version, data, name } => ToWorker::Hello { version, data, name },
            ToHeader::Run { seq, id, task, args } => ToWorker::Run {
                seq,
                id,
                task,
                args: args.into_iter().map(|s| unslot(s, &mut segs)).collect::<Result<_, _>>()?,
            },
            ToHeader::Shutdown => ToWorker::Shutdown,
        };
        check_done(segs)?;
        Ok(m)
    }
}

impl Message for FromWorker {
    fn encode(self) -> Frame {
        let mut segments = Vec::new();
        let h = match self {
            FromWorker::Ready { pid, hostname } => FromHeader::Ready { pid, hostname },
            FromWorker::Failed { message } => FromHeader::Failed { message },
            FromWorker::Done { seq, outcome, execution } => {
                FromHeader::Done { seq, outcome: outcome.map(|p| slot(p, &mut segments)), execution }
            }
        };
        Frame { header: header(&h), segments }
    }

    fn decode(f: Frame) -> Result<Self, ProtocolError> {
        let h: FromHeader = parse(&f)?;
        let mut segs = f.segments.into_iter();
        let m = match h {
            FromHeader::Ready { pid, hostname } => FromWorker::Ready { pid, hostname },
            FromHeader::Failed { message } => FromWorker::Failed { message },
            FromHeader::Done { seq, outcome, execution } => {
                let outcome = match outcome {
                    Ok(s) => Ok(unslot(s, &mut segs)?),
                    Err(e) => Err(e),
                };
                FromWorker::Done { seq, outcome, execution }
            }
        };
        check_done(segs)?;
        Ok(m)
    }
}

/// Reads and decodes one message; `Ok(None)` at a clean end of stream.
pub(crate) fn recv<M: Message, R: Read + ?Sized>(r: &mut R) -> Result<Option<M>, ProtocolError> {
    match Frame::read_from(r)? {
        None => Ok(None),
        Some(f) => Ok(Some(M::decode(f)?)),
    }
}

/// Encodes and writes one message (does not flush).
pub fn send<M: Message, W: Write + ?Sized>(w: &mut W, m: M) -> io::Result<()> {
    m.encode().write_to(w)
}

/// Reads a stream socket, polling it (non-blocking `recv`) for [`crate::spin::budget`] before
/// falling back to a blocking read: the waiting policy of [`crate::spin`], for sockets.
pub struct SpinRead<S>(pub S);

impl<S: std::os::fd::AsFd> Read for SpinRead<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        spin_read(self.0.as_fd(), buf)
    }
}

/// Reads what the socket `fd` holds: polls (non-blocking `recv`) for the polling budget, then
/// blocks in `recv`.
fn spin_read(fd: std::os::fd::BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let mut recv = |flags| {
        // Descriptors passed with the bytes (shared-memory segments) are kept for `read_from`.
        crate::shm::recv(fd, buf, flags)
    };
    let try_recv = || match recv(libc::MSG_DONTWAIT) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => None,
        r => Some(r),
    };
    if let Some(r) = crate::spin::until(crate::spin::budget(), try_recv) {
        return r;
    }
    loop {
        match recv(0) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Which way a [`Doorbell`] counter counts writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Written by the driver, read by the worker.
    ToWorker = 0,
    /// Written by the worker, read by the driver.
    ToDriver = 1,
}

/// Shared memory (a `memfd`) between a driver and one worker process: a page holding a counter
/// per direction on cache lines of their own, then a ring of frames per direction. A side
/// [rings](Doorbell::ring) its counter after each entry it puts; the reader of the other side
/// polls the counter while it spins, and sleeps on it (a futex) after.
///
/// Frames travel in the rings ([`put_frame`](Doorbell::put_frame)): no system call per frame
/// while the reader polls. A frame too large for a ring, or carrying shared-memory segments
/// (descriptors), goes through the socket, announced in the ring first
/// ([`put_on_socket`](Doorbell::put_on_socket)), so the reader takes every frame in order from
/// the ring and reads the socket only when an entry says so. A worker that dies leaves at worst
/// entries that do not come, and its reader learns of the death from the socket's end.
pub struct Doorbell {
    ptr: std::ptr::NonNull<u8>,
    fd: std::os::fd::OwnedFd,
}

// SAFETY: the mapping is shared memory valid until drop, used through atomics, and through
// copies into and out of the rings that the rings' atomic indices order (one writer and one
// reader per ring).
unsafe impl Send for Doorbell {}
// SAFETY: as above.
unsafe impl Sync for Doorbell {}

/// Size of a doorbell's page of counters and flags; each sits on a 128-byte line of its own.
const PAGE_LEN: usize = 4096;
/// Bytes of each direction's ring of frames ([`Doorbell::put_frame`]), after the page.
pub const RING_LEN: usize = 64 << 10;
/// Frames of at most this many bytes (and no shared-memory segment) may travel inline in a
/// ring; larger ones go through the socket, announced in the ring ([`Entry::OnSocket`]).
pub const RING_INLINE_MAX: usize = 4 << 10;
/// Size of a doorbell mapping: the page, then the ring to the worker, then the ring to the driver.
const BELL_LEN: usize = PAGE_LEN + 2 * RING_LEN;
/// A ring entry's length word meaning "the next frame is on the socket" (perhaps still being written).
const ON_SOCKET: u32 = u32::MAX;
/// A ring entry's length word meaning "the next frame is on the socket, whole".
const ON_SOCKET_WHOLE: u32 = u32::MAX - 2;
/// A ring entry's length word meaning "the rest of the ring is padding: go on at its start".
const WRAP: u32 = u32::MAX - 1;

/// The next entry of a ring ([`Doorbell::next`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    /// Nothing was put in the ring since the last entry taken.
    Empty,
    /// A whole frame's bytes (as [`Frame::to_vec`] has them).
    Inline(Vec<u8>),
    /// The next frame comes through the socket: `whole` if it is there whole (a read does not
    /// block), else it may still be being written.
    OnSocket {
        /// The frame was written whole before its entry was put.
        whole: bool,
    },
}

impl Doorbell {
    /// A new page (zeroed counters), to be shared through [`fd`](Self::fd).
    pub fn create() -> io::Result<Doorbell> {
        // SAFETY: plain syscall; the result is checked and owned below.
        let fd = unsafe { libc::memfd_create(c"taps-doorbell".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: valid descriptor.
        if unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&fd), BELL_LEN as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Doorbell::from_fd(fd)
    }

    /// Maps the page behind `fd` (a descriptor of [`create`](Self::create)'s page, inherited).
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> io::Result<Doorbell> {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        // SAFETY: zeroed stat is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and out-pointer.
        if unsafe { libc::fstat(raw, &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if st.st_size as usize != BELL_LEN {
            return Err(io::Error::other(format!("not a taps doorbell ({} bytes, not {})", st.st_size, BELL_LEN)));
        }
        // SAFETY: mapping a whole file of BELL_LEN bytes; unmapped in drop.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), BELL_LEN, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, raw, 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr as *mut u8).ok_or_else(|| io::Error::other("mmap gave a null pointer"))?;
        Ok(Doorbell { ptr, fd })
    }

    /// A new page in the file `path`, created here (it must not exist): for a peer that cannot
    /// inherit a descriptor (an MPI rank on the same node), which maps it by name
    /// ([`open_file`](Self::open_file)); the creator removes the name once the peer has it.
    pub fn create_file(path: &std::path::Path) -> io::Result<Doorbell> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path)?;
        if let Err(e) = f.set_len(BELL_LEN as u64) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Doorbell::from_fd(f.into())
    }

    /// Maps the page in the file `path` ([`create_file`](Self::create_file)).
    pub fn open_file(path: &std::path::Path) -> io::Result<Doorbell> {
        Doorbell::from_fd(std::fs::OpenOptions::new().read(true).write(true).open(path)?.into())
    }

    /// Whether `frame` may travel inline in a ring ([`put_frame`](Self::put_frame) puts it
    /// when the ring has room).
    pub fn fits(frame: &Frame) -> bool {
        frame.len() <= RING_INLINE_MAX && !frame.segments.iter().any(|s| crate::shm::segment_of(s).is_some())
    }

    /// The page's descriptor (to hand to the peer).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    fn counter(&self, side: Side) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: offsets 0 and 128 are inside the page and 8-byte aligned (the page is).
        unsafe { &*(self.ptr.as_ptr().add(side as usize * 128) as *const std::sync::atomic::AtomicU64) }
    }

    /// Says that bytes of `side` are in the socket (call after they were written).
    pub fn ring(&self, side: Side) {
        self.counter(side).fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// How often `side` was rung.
    pub fn rung(&self, side: Side) -> u64 {
        self.counter(side).load(std::sync::atomic::Ordering::Acquire)
    }

    /// A flag word of the page (futex-sized, on a cache line of its own).
    fn flag(&self, f: Flag) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: the offsets of Flag are inside the page and 4-byte aligned.
        unsafe { &*(self.ptr.as_ptr().add(f as usize) as *const std::sync::atomic::AtomicU32) }
    }

    /// The bytes put into `side`'s ring so far (written by its writer only) and taken from it (by
    /// its reader only), each on a cache line of its own.
    fn ring_index(&self, side: Side, taken: bool) -> &std::sync::atomic::AtomicU64 {
        let at = 512 + side as usize * 256 + usize::from(taken) * 128;
        // SAFETY: offsets 512..=896 are inside the page and 8-byte aligned.
        unsafe { &*(self.ptr.as_ptr().add(at) as *const std::sync::atomic::AtomicU64) }
    }

    /// `side`'s ring of frames.
    fn ring_bytes(&self, side: Side) -> *mut u8 {
        // SAFETY: the rings follow the page inside the mapping.
        unsafe { self.ptr.as_ptr().add(PAGE_LEN + side as usize * RING_LEN) }
    }

    /// Puts an entry of `len` bytes (the concatenation of `parts`, or no bytes with the length
    /// word `word`) into `side`'s ring if it has room: whether it did. Only the side's writer
    /// calls it (one thread at a time).
    fn put(&self, side: Side, word: u32, parts: &[&[u8]], len: usize) -> bool {
        use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
        let need = 4 + len.next_multiple_of(4);
        let put = self.ring_index(side, false).load(Relaxed);
        let taken = self.ring_index(side, true).load(Acquire);
        let at = (put % RING_LEN as u64) as usize;
        // An entry never wraps: the end of the ring is skipped when it does not fit there.
        let pad = if RING_LEN - at < need { RING_LEN - at } else { 0 };
        if put + (pad + need) as u64 - taken > RING_LEN as u64 {
            return false;
        }
        let ring = self.ring_bytes(side);
        // SAFETY: [at, at + pad) and the entry's bytes are inside the ring, in the part the reader
        // has taken (the check above), and published only by the Release store below.
        unsafe {
            if pad > 0 {
                std::ptr::write_unaligned(ring.add(at) as *mut u32, WRAP.to_le());
            }
            let start = (at + pad) % RING_LEN;
            std::ptr::write_unaligned(ring.add(start) as *mut u32, word.to_le());
            let mut to = ring.add(start + 4);
            for p in parts {
                std::ptr::copy_nonoverlapping(p.as_ptr(), to, p.len());
                to = to.add(p.len());
            }
        }
        self.ring_index(side, false).store(put + (pad + need) as u64, Release);
        true
    }

    /// Puts `frame` whole into `side`'s ring if it may travel inline (at most
    /// [`RING_INLINE_MAX`] bytes, no shared-memory segment) and the ring has room: whether it
    /// did. The reader learns of it from the side's counter: [`ring`](Self::ring) (or
    /// [`ring_driver`](Self::ring_driver)) after it.
    pub fn put_frame(&self, side: Side, frame: &Frame) -> bool {
        if !Doorbell::fits(frame) {
            return false;
        }
        let len = frame.len();
        let prefix = frame.prefix();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + frame.segments.len());
        parts.push(&prefix);
        parts.extend(frame.segments.iter().map(|s| &s[..]));
        self.put(side, len as u32, &parts, len)
    }

    /// Says in `side`'s ring that the next frame comes through the socket, if the ring has room
    /// (whether it did); ring after it. `whole`: the frame is in the socket whole already (so any
    /// thread may read it without blocking); else call it before writing the frame, and the
    /// reader reads while it is written.
    pub fn put_on_socket(&self, side: Side, whole: bool) -> bool {
        self.put(side, if whole { ON_SOCKET_WHOLE } else { ON_SOCKET }, &[], 0)
    }

    /// [`put_on_socket`](Self::put_on_socket), waiting for room if the reader is behind (the
    /// worker's way: its driver takes entries as long as it lives, and takes its workers with
    /// it when it dies).
    pub fn put_on_socket_waiting(&self, side: Side, whole: bool) {
        let mut tries = 0u32;
        while !self.put_on_socket(side, whole) {
            tries = tries.wrapping_add(1);
            if tries < 1000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
    }

    /// Takes the next entry of `side`'s ring (only the side's reader calls it, one thread at a
    /// time). An [`Entry::OnSocket`] not `whole` is taken only with `may_block`: without, it
    /// stays for the next call (a thread that must not block on the socket leaves it to one that
    /// may). An entry that is not one the writer can put is an error (the peer wrote garbage).
    pub fn next(&self, side: Side, may_block: bool) -> Result<Entry, ProtocolError> {
        use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
        let mut taken = self.ring_index(side, true).load(Relaxed);
        let put = self.ring_index(side, false).load(Acquire);
        let ring = self.ring_bytes(side);
        loop {
            if put <= taken {
                return Ok(Entry::Empty);
            }
            let at = (taken % RING_LEN as u64) as usize;
            // SAFETY: `at` is 4-byte aligned inside the ring (every entry's length is rounded up).
            let word = u32::from_le(unsafe { std::ptr::read_unaligned(ring.add(at) as *const u32) });
            let (entry, len) = match word {
                WRAP => {
                    taken += (RING_LEN - at) as u64;
                    continue;
                }
                ON_SOCKET if !may_block => return Ok(Entry::OnSocket { whole: false }),
                ON_SOCKET => (Entry::OnSocket { whole: false }, 0),
                ON_SOCKET_WHOLE => (Entry::OnSocket { whole: true }, 0),
                n if (n as usize) <= RING_INLINE_MAX && at + 4 + n as usize <= RING_LEN => {
                    let mut v = vec![0u8; n as usize];
                    // SAFETY: the entry's bytes are inside the ring, published before `put`.
                    unsafe { std::ptr::copy_nonoverlapping(ring.add(at + 4), v.as_mut_ptr(), v.len()) };
                    (Entry::Inline(v), n as usize)
                }
                n => {
                    return Err(ProtocolError::Unexpected(if n as usize > RING_INLINE_MAX {
                        "a ring entry longer than an inline frame may be"
                    } else {
                        "a ring entry past the ring's end"
                    }));
                }
            };
            self.ring_index(side, true).store(taken + (4 + len.next_multiple_of(4)) as u64, Release);
            return Ok(entry);
        }
    }

    /// The low half of `side`'s counter, as a futex word (the page is little- or big-endian
    /// alike for this: both sides are one machine).
    fn word(&self, side: Side) -> *const u32 {
        let c = self.counter(side) as *const std::sync::atomic::AtomicU64 as *const u32;
        // The half that changes with every ring.
        if cfg!(target_endian = "little") { c } else { c.wrapping_add(1) }
    }

    /// The flag by which the reader of `side`'s frames says it sleeps on the page.
    fn waits(&self, side: Side) -> &std::sync::atomic::AtomicU32 {
        self.flag(match side {
            Side::ToDriver => Flag::DriverWaits,
            Side::ToWorker => Flag::WorkerWaits,
        })
    }

    /// Counts a frame for `side`'s reader, and wakes it if it announced its sleep.
    fn ring_waking(&self, side: Side) {
        use std::sync::atomic::Ordering::SeqCst;
        self.counter(side).fetch_add(1, SeqCst);
        if self.waits(side).load(SeqCst) != 0 {
            self.wake(side);
        }
    }

    /// Wakes `side`'s reader if it sleeps on the page.
    fn wake(&self, side: Side) {
        // SAFETY: FUTEX_WAKE on a word of our shared mapping (not FUTEX_PRIVATE: two processes).
        unsafe { libc::syscall(libc::SYS_futex, self.word(side), libc::FUTEX_WAKE, 1) };
    }

    /// `side`'s reader sleeps until its counter passes `seen`, it is woken, or `timeout` passes
    /// (or a signal comes); returns at once if the counter passed. With `announce`, a ring wakes
    /// it; without, only [`wake`](Self::wake) does.
    fn sleep(&self, side: Side, seen: u64, timeout: std::time::Duration, announce: bool) {
        use std::sync::atomic::Ordering::SeqCst;
        let waits = self.waits(side);
        if announce {
            waits.store(1, SeqCst);
        }
        // After announcing the wait, look again: a ring before it is seen here, one after it wakes us.
        if self.counter(side).load(SeqCst) == seen {
            futex_wait(self.word(side), seen as u32, timeout);
        }
        if announce {
            waits.store(0, SeqCst);
        }
    }

    /// The worker's ring for a frame it wrote whole: counts it, and wakes the driver's reader
    /// if it announced its sleep on the page ([`sleep_reader`](Self::sleep_reader)).
    pub fn ring_driver(&self) {
        self.ring_waking(Side::ToDriver);
    }

    /// The driver's ring for a frame it put in the worker's ring (or on the socket): counts it,
    /// and wakes the worker if it sleeps on the page ([`sleep_worker`](Self::sleep_worker)).
    pub fn ring_worker(&self) {
        self.ring_waking(Side::ToWorker);
    }

    /// Wakes the worker if it sleeps on the page, so that it looks again (at the socket's end,
    /// say: the driver calls it after it shut the socket down).
    pub fn wake_worker(&self) {
        self.wake(Side::ToWorker);
    }

    /// The worker sleeps until the driver rings past `seen` ([`ring_worker`](Self::ring_worker)),
    /// wakes it, or `timeout` passes (or a signal comes); returns at once if the driver rang.
    pub fn sleep_worker(&self, seen: u64, timeout: std::time::Duration) {
        self.sleep(Side::ToWorker, seen, timeout, true);
    }

    /// Wakes the driver's reader if it sleeps ([`sleep_reader`](Self::sleep_reader)), so that it
    /// looks again (and sleeps announced, if it slept unannounced).
    pub fn wake_reader(&self) {
        self.wake(Side::ToDriver);
    }

    /// The driver's reader sleeps until the worker rings past `seen`, is
    /// [woken](Self::wake_reader), or `timeout` passes (or a signal comes); returns at once if
    /// the worker rang. With `announce`, the worker wakes it when it rings; without, only
    /// [`wake_reader`](Self::wake_reader) does (other threads take the frames meanwhile; a
    /// worker that writes a frame to the socket wakes the reader, which reads it while it is
    /// written).
    pub fn sleep_reader(&self, seen: u64, timeout: std::time::Duration, announce: bool) {
        self.sleep(Side::ToDriver, seen, timeout, announce);
    }
}

/// Sleeps until the futex word `word` is woken, no longer holds `value`, or `timeout` passes.
fn futex_wait(word: *const u32, value: u32, timeout: std::time::Duration) {
    let ts =
        libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
    // SAFETY: FUTEX_WAIT on a word of a live shared mapping, with a valid timeout; it returns at
    // once if the word no longer holds `value`.
    unsafe { libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAIT, value, &ts) };
}

/// Flag words of a [`Doorbell`] page (their byte offsets).
#[derive(Clone, Copy)]
enum Flag {
    /// The driver's reader sleeps on the page (the worker must wake it).
    DriverWaits = 256,
    /// The worker sleeps on the page (the driver must wake it).
    WorkerWaits = 1024,
}

impl Drop for Doorbell {
    fn drop(&mut self) {
        // SAFETY: the mapping made in from_fd, not used after this.
        unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, BELL_LEN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_stream<M: Message + Clone + PartialEq + std::fmt::Debug>(m: M) {
        let mut buf = Vec::new();
        send(&mut buf, m.clone()).unwrap();
        let mut r = &buf[..];
        assert_eq!(recv::<M, _>(&mut r).unwrap().unwrap(), m);
        assert!(recv::<M, _>(&mut r).unwrap().is_none(), "clean end of stream");
        let f = Frame::from_bytes(Bytes::from(buf.clone())).unwrap();
        assert_eq!(f.to_vec(), buf);
        assert_eq!(M::decode(f).unwrap(), m);
    }

    #[test]
    fn messages_round_trip() {
        let r = DataRef { key: "/tmp/x".into(), size: 12 };
        roundtrip_stream(ToWorker::Hello {
            version: PROTOCOL_VERSION,
            data: DataSpec { filter: Some(("never".into(), String::new())), ..Default::default() },
            name: "w0".into(),
        });
        roundtrip_stream(ToWorker::Run {
            seq: u64::MAX,
            id: uuid::Uuid::new_v4(),
            task: "noop".into(),
            args: vec![
                WirePayload::Bytes(Bytes::from(vec![7u8; 100_000])),
                WirePayload::Ref(r.clone()),
                WirePayload::Bytes(Bytes::new()),
            ],
        });
        roundtrip_stream(ToWorker::Shutdown);
        roundtrip_stream(FromWorker::Ready { pid: 42, hostname: "h".into() });
        roundtrip_stream(FromWorker::Failed { message: "no".into() });
        roundtrip_stream(FromWorker::Done {
            seq: 3,
            outcome: Ok(WirePayload::Bytes(Bytes::from_static(b"abc"))),
            execution: ExecutionInfo { hostname: "h".into(), task_start_time: 1.5, ..Default::default() },
        });
        roundtrip_stream(FromWorker::Done {
            seq: 4,
            outcome: Err(TaskError::new("TaskPanic", "boom")),
            execution: ExecutionInfo::default(),
        });
        roundtrip_stream(FromWorker::Done {
            seq: 5,
            outcome: Ok(WirePayload::Ref(r)),
            execution: ExecutionInfo::default(),
        });
    }

    #[test]
    fn segments_are_not_copied_by_from_bytes() {
        let payload = Bytes::from(vec![1u8; 4096]);
        let m = ToWorker::Run {
            seq: 1,
            id: Default::default(),
            task: "echo".into(),
            args: vec![WirePayload::Bytes(payload)],
        };
        let buf = Bytes::from(m.encode().to_vec());
        let f = Frame::from_bytes(buf.clone()).unwrap();
        let seg = &f.segments[0];
        let off = seg.as_ptr() as usize - buf.as_ptr() as usize;
        assert!(off < buf.len() && seg.len() == 4096, "segment points into the received buffer");
    }

    #[test]
    fn shared_segments_travel_as_descriptors_beside_the_stream() {
        use std::os::fd::AsRawFd;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut seg = crate::shm::SegmentMut::create(3 * crate::shm::MIN_SHARED).unwrap();
        seg.as_mut_slice().iter_mut().enumerate().for_each(|(i, x)| *x = (i % 251) as u8);
        let big = seg.freeze();
        let m = ToWorker::Run {
            seq: 1,
            id: Default::default(),
            task: "echo".into(),
            args: vec![WirePayload::Bytes(big.clone()), WirePayload::Bytes(Bytes::from(vec![1u8; 1000]))],
        };
        let mut out = io::BufWriter::new(&a);
        m.clone().encode().write_to_socket(&mut out).unwrap();
        out.flush().unwrap();
        let mut pending: libc::c_int = 0;
        // SAFETY: FIONREAD on an open socket with a valid out-pointer.
        assert_eq!(unsafe { libc::ioctl(b.as_raw_fd(), libc::FIONREAD, &mut pending) }, 0);
        assert!(pending < 2000, "the big payload is not in the stream ({} bytes)", pending);
        let mut r = io::BufReader::new(SpinRead(&b));
        let back = ToWorker::decode(Frame::read_from(&mut r).unwrap().unwrap()).unwrap();
        assert_eq!(back, m, "the payloads arrive intact");
        let ToWorker::Run { args, .. } = back else { unreachable!() };
        let WirePayload::Bytes(got) = &args[0] else { unreachable!() };
        assert!(crate::shm::segment_of(got).is_some(), "received as a mapped segment");
        // Without its descriptor (a plain reader), a shared segment is an error, not garbage.
        let mut plain = Vec::new();
        m.encode().write_to(&mut plain).unwrap();
        let mut marked = plain.clone();
        marked[8..16].copy_from_slice(&((3 * crate::shm::MIN_SHARED) as u64 | SHARED).to_le_bytes());
        assert!(Frame::read_from(&mut &marked[..]).is_err());
    }

    #[test]
    fn frames_come_in_order_through_the_ring_or_the_socket_it_names() {
        use std::os::fd::AsFd;
        // Two mappings of one page, as the driver and its worker have.
        let writer_bell = Doorbell::create().unwrap();
        let reader_bell =
            std::sync::Arc::new(Doorbell::from_fd(writer_bell.fd().try_clone_to_owned().unwrap()).unwrap());
        writer_bell.ring(Side::ToWorker);
        assert_eq!(reader_bell.rung(Side::ToWorker), 1, "a ring shows in the other mapping");
        assert_eq!(reader_bell.rung(Side::ToDriver), 0, "each side has its own counter");
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut seg = crate::shm::SegmentMut::create(crate::shm::MIN_SHARED).unwrap();
        seg.as_mut_slice().iter_mut().enumerate().for_each(|(i, x)| *x = (i % 253) as u8);
        let big = seg.freeze();
        let msg = |seq: u64, arg: Bytes| ToWorker::Run {
            seq,
            id: Default::default(),
            task: "echo".into(),
            args: vec![WirePayload::Bytes(arg)],
        };
        // Inline, then one too large for the ring (more than the socket's buffer holds: the reader
        // reads while it is written), inline, one with a shared-memory segment (a descriptor
        // beside the bytes), inline after a pause.
        let sent = vec![
            msg(1, Bytes::from_static(b"one")),
            msg(2, Bytes::from(vec![2u8; 3 << 20])),
            msg(3, Bytes::from_static(b"three")),
            msg(4, big),
            msg(5, Bytes::from_static(b"five")),
        ];
        let to_send = sent.clone();
        let peer = std::thread::spawn(move || {
            let mut out = io::BufWriter::new(&a);
            for (i, m) in to_send.into_iter().enumerate() {
                if i == 4 {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                let f = m.encode();
                if writer_bell.put_frame(Side::ToDriver, &f) {
                    writer_bell.ring(Side::ToDriver);
                } else if f.socket_len() <= 64 << 10 {
                    // Small on the socket (the segment travels as a descriptor): written, then announced.
                    f.write_to_socket(&mut out).unwrap();
                    out.flush().unwrap();
                    assert!(writer_bell.put_on_socket(Side::ToDriver, true));
                    writer_bell.ring(Side::ToDriver);
                } else {
                    // Announced, then written (the reader reads while it is written).
                    assert!(writer_bell.put_on_socket(Side::ToDriver, false));
                    writer_bell.ring(Side::ToDriver);
                    f.write_to_socket(&mut out).unwrap();
                    out.flush().unwrap();
                }
            }
            writer_bell
        });
        let mut r = io::BufReader::new(SpinRead(b.as_fd()));
        for m in &sent {
            let f = loop {
                match reader_bell.next(Side::ToDriver, true).unwrap() {
                    Entry::Inline(v) => break Frame::from_bytes(v.into()).unwrap(),
                    Entry::OnSocket { .. } => break Frame::read_from(&mut r).unwrap().unwrap(),
                    Entry::Empty => std::thread::yield_now(),
                }
            };
            assert_eq!(&ToWorker::decode(f).unwrap(), m);
        }
        let writer_bell = peer.join().unwrap();
        assert_eq!(reader_bell.rung(Side::ToDriver), 5);
        drop(writer_bell);
        assert_eq!(reader_bell.rung(Side::ToDriver), 5, "the page outlives the other mapping");
        // Any other descriptor is refused in one line.
        let not_bell = crate::shm::SegmentMut::create(crate::shm::MIN_SHARED).unwrap().freeze();
        let fd = crate::shm::segment_of(&not_bell).unwrap().fd().try_clone_to_owned().unwrap();
        let e = Doorbell::from_fd(fd).err().expect("not a doorbell").to_string();
        assert!(e.starts_with("not a taps doorbell"), "{}", e);
    }

    #[test]
    fn truncated_and_garbage_frames_are_errors() {
        let m = ToWorker::Run {
            seq: 1,
            id: Default::default(),
            task: "echo".into(),
            args: vec![WirePayload::Bytes(Bytes::from(vec![1u8; 64]))],
        };
        let full = m.clone().encode().to_vec();
        for cut in [1, 7, 9, 20, full.len() - 1] {
            let mut r = &full[..cut];
            assert!(Frame::read_from(&mut r).is_err(), "cut at {}", cut);
            assert!(Frame::from_bytes(Bytes::copy_from_slice(&full[..cut])).is_err(), "cut at {}", cut);
        }
        let mut extra = full.clone();
        extra.push(0);
        assert!(Frame::from_bytes(Bytes::from(extra)).is_err());
        let garbage = [0xffu8; 16];
        assert!(Frame::read_from(&mut &garbage[..]).is_err());
        // A header that does not match its segments.
        let bad = Frame { header: m.encode().header, segments: vec![] };
        assert!(ToWorker::decode(bad).is_err());
    }

    #[test]
    fn errors_say_whether_the_peer_or_the_connection_failed() {
        let m = ToWorker::Run {
            seq: 1,
            id: Default::default(),
            task: "echo".into(),
            args: vec![WirePayload::Bytes(Bytes::from(vec![1u8; 8]))],
        };
        let full = m.clone().encode().to_vec();
        // A peer that died mid-frame: the connection, not the peer's words.
        let cut = Frame::read_from(&mut &full[..full.len() - 1]).unwrap_err();
        assert!(matches!(cut, ProtocolError::Io(_)) && !cut.is_malformed(), "{:?}", cut);
        // Bytes that are no frame, and a header that does not fit its segments: malformed.
        let garbage = Frame::read_from(&mut &[0xffu8; 16][..]).unwrap_err();
        assert!(matches!(garbage, ProtocolError::Frame(_)) && garbage.is_malformed(), "{:?}", garbage);
        let bad = ToWorker::decode(Frame { header: m.encode().header, segments: vec![] }).unwrap_err();
        assert!(matches!(bad, ProtocolError::Message(_)), "{:?}", bad);
        // Each formats as one line.
        let v = ProtocolError::Version { worker: 1, driver: 2 };
        for e in [cut, garbage, bad, v] {
            assert_eq!(e.to_string().lines().count(), 1, "{}", e);
        }
    }

    fn run_of(n: usize) -> Frame {
        ToWorker::Run {
            seq: n as u64,
            id: Default::default(),
            task: "echo".into(),
            args: vec![WirePayload::Bytes(Bytes::from(vec![n as u8; n]))],
        }
        .encode()
    }

    fn seq_of(e: Entry) -> u64 {
        let Entry::Inline(b) = e else { panic!("not inline: {:?}", e) };
        match ToWorker::decode(Frame::from_bytes(b.into()).unwrap()).unwrap() {
            ToWorker::Run { seq, args, .. } => {
                let WirePayload::Bytes(a) = &args[0] else { panic!("not bytes") };
                assert!(a.len() == seq as usize && a.iter().all(|&x| x == seq as u8), "payload of {}", seq);
                seq
            }
            m => panic!("not a Run: {:?}", m),
        }
    }

    #[test]
    fn the_ring_keeps_frames_and_socket_entries_in_order_across_its_end() {
        let bell = Doorbell::create().unwrap();
        // A peer mapping of the same pages (the worker's side).
        let peer = Doorbell::from_fd(bell.fd().try_clone_to_owned().unwrap()).unwrap();
        let mut expect = std::collections::VecDeque::new();
        // Sizes that do not divide the ring: entries wrap past its end many times.
        for round in 0..400usize {
            let n = 1 + round * 37 % 3000;
            if round % 7 == 3 {
                assert!(bell.put_on_socket(Side::ToWorker, false));
                expect.push_back(None);
            } else {
                assert!(bell.put_frame(Side::ToWorker, &run_of(n)), "room for round {}", round);
                expect.push_back(Some(n as u64));
            }
            // The reader lags a few entries behind.
            while expect.len() > 3 {
                match expect.pop_front().unwrap() {
                    None => {
                        // Left in place for a reader that may not read the socket, taken by one that may.
                        let being_written = Entry::OnSocket { whole: false };
                        assert_eq!(peer.next(Side::ToWorker, false).unwrap(), being_written);
                        assert_eq!(peer.next(Side::ToWorker, true).unwrap(), being_written);
                    }
                    Some(seq) => assert_eq!(seq_of(peer.next(Side::ToWorker, true).unwrap()), seq),
                }
            }
        }
        while let Some(e) = expect.pop_front() {
            match e {
                None => assert_eq!(peer.next(Side::ToWorker, true).unwrap(), Entry::OnSocket { whole: false }),
                Some(seq) => assert_eq!(seq_of(peer.next(Side::ToWorker, true).unwrap()), seq),
            }
        }
        assert_eq!(peer.next(Side::ToWorker, true).unwrap(), Entry::Empty);
        // The other direction is a ring of its own.
        assert_eq!(bell.next(Side::ToDriver, true).unwrap(), Entry::Empty);
    }

    #[test]
    fn the_ring_refuses_what_it_cannot_hold_and_reports_garbage() {
        let bell = Doorbell::create().unwrap();
        // Too large for an entry: such a frame goes through the socket.
        assert!(!bell.put_frame(Side::ToDriver, &run_of(RING_INLINE_MAX)));
        // A full ring takes nothing more until the reader takes entries.
        let mut put = 0;
        while bell.put_frame(Side::ToDriver, &run_of(4000)) {
            put += 1;
        }
        assert_eq!(put, RING_LEN / 4096, "entries of a 64 KiB ring");
        while bell.put_on_socket(Side::ToDriver, true) {}
        assert!(!bell.put_frame(Side::ToDriver, &run_of(1)));
        assert_eq!(seq_of(bell.next(Side::ToDriver, true).unwrap()), 4000);
        assert!(bell.put_on_socket(Side::ToDriver, false));
        // A whole frame's entry is taken also by a reader that may not block; one being written
        // stays for a reader that may.
        let socket = Doorbell::create().unwrap();
        assert!(socket.put_on_socket(Side::ToWorker, true) && socket.put_on_socket(Side::ToWorker, false));
        assert_eq!(socket.next(Side::ToWorker, false).unwrap(), Entry::OnSocket { whole: true });
        for _ in 0..2 {
            assert_eq!(socket.next(Side::ToWorker, false).unwrap(), Entry::OnSocket { whole: false });
        }
        assert_eq!(socket.next(Side::ToWorker, true).unwrap(), Entry::OnSocket { whole: false });
        assert_eq!(socket.next(Side::ToWorker, false).unwrap(), Entry::Empty);
        // A length word no writer puts: the peer wrote garbage.
        let bad = Doorbell::create().unwrap();
        let at = bad.ring_bytes(Side::ToWorker);
        // SAFETY: the first word of the ring, inside the mapping.
        unsafe { std::ptr::write_unaligned(at as *mut u32, (RING_INLINE_MAX as u32 + 1).to_le()) };
        bad.ring_index(Side::ToWorker, false).store(8, std::sync::atomic::Ordering::Release);
        let e = bad.next(Side::ToWorker, true).unwrap_err();
        assert!(e.to_string().contains("ring entry"), "{}", e);
    }
}
