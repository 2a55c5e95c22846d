//! Protocol frames over MPI point-to-point messages on `MPI_COMM_WORLD`, all non-blocking.
//!
//! A frame whose payload is small goes as one message ([`TAG_FRAME`], [`Frame::to_vec`]); a large
//! one as a head message ([`TAG_HEAD`]: segment lengths + header) followed by its segments, each
//! in chunks of at most [`CHUNK`] bytes ([`TAG_SEG`]), sent straight from their `Bytes` and
//! received straight into their own allocations. MPI keeps messages of one sender in order, so a
//! receiver that matches a source's messages in order (`MPI_Improbe` with any tag) reassembles
//! them without sequence numbers. A segment that is a named [shared-memory segment](crate::shm)
//! of the run goes to a rank that sees the run's directory as its name in the head (its length
//! marked [`SHARED`]), not as bytes; the receiver maps it. Every receive is `MPI_Imrecv` and every send `MPI_Isend`: a
//! peer that dies mid-transfer leaves a request that is abandoned, never a blocked thread.

use std::collections::VecDeque;
use std::os::raw::{c_int, c_void};

use bytes::Bytes;
use mpi::ffi;

use crate::protocol::{Frame, ProtocolError, SHARED};

/// A whole frame in one message.
pub(crate) const TAG_FRAME: c_int = 1;
/// The head of a frame whose segments follow.
pub(crate) const TAG_HEAD: c_int = 2;
/// A chunk of a segment.
pub(crate) const TAG_SEG: c_int = 3;
/// Rank 0 → worker: where to open the liveness connection (UTF-8 text).
pub(crate) const TAG_WATCH: c_int = 4;
/// Rank 0 → worker: a rank was lost, so skip `MPI_Finalize` at exit (it would wait for the
/// dead rank forever).
pub(crate) const TAG_LOST: c_int = 5;

/// Rank 0 → worker: the run's shared-memory directory and prefix (`DIR\nPREFIX`); worker →
/// rank 0: `1` if it sees them (then named segments pass between them), else `0`.
pub(crate) const TAG_SHM: c_int = 6;

/// Frames with at most this many payload bytes are sent as one message.
pub(crate) const SMALL: usize = 64 << 10;
/// Largest single MPI message (counts are C ints).
pub(crate) const CHUNK: usize = 1 << 30;

/// This process's rank and the world size.
pub(crate) fn rank_and_size() -> (i32, i32) {
    let (mut rank, mut size) = (0, 0);
    // SAFETY: MPI is initialised (callers run after `mpi::initialize*`); out-pointers are valid.
    unsafe {
        ffi::MPI_Comm_rank(ffi::RSMPI_COMM_WORLD, &mut rank);
        ffi::MPI_Comm_size(ffi::RSMPI_COMM_WORLD, &mut size);
    }
    (rank, size)
}

/// Makes MPI errors on the world communicator return codes instead of aborting the job.
pub(crate) fn errors_return() {
    // SAFETY: MPI is initialised; both handles are predefined.
    unsafe { ffi::MPI_Comm_set_errhandler(ffi::RSMPI_COMM_WORLD, ffi::RSMPI_ERRORS_RETURN) };
}

/// Aborts the whole MPI job with `code`.
pub fn abort(code: i32) -> ! {
    // SAFETY: MPI is initialised.
    unsafe { ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, code) };
    std::process::exit(code)
}

/// Makes this thread's short sleeps precise (1 µs timer slack instead of 50 µs): the polling
/// loops back off in steps of tens of microseconds.
pub(crate) fn precise_sleeps() {
    // SAFETY: plain prctl on the calling thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
}

/// An MPI error code as text.
fn error_string(rc: c_int) -> String {
    let mut buf = vec![0 as std::os::raw::c_char; 512];
    let mut len = 0;
    // SAFETY: the buffer is MPI_MAX_ERROR_STRING (256) or more.
    unsafe { ffi::MPI_Error_string(rc, buf.as_mut_ptr(), &mut len) };
    let bytes: Vec<u8> = buf[..len.max(0) as usize].iter().map(|&c| c as u8).collect();
    format!("MPI error {}: {}", rc, String::from_utf8_lossy(&bytes))
}

fn check(rc: c_int) -> Result<(), String> {
    if rc == 0 { Ok(()) } else { Err(error_string(rc)) }
}

/// Outstanding non-blocking operations, with the buffers they use.
#[derive(Default)]
pub(crate) struct Requests {
    reqs: Vec<ffi::MPI_Request>,
}

impl Requests {
    fn push(&mut self, r: ffi::MPI_Request) {
        self.reqs.push(r);
    }

    /// Whether every request has completed (tests them; completed ones are freed by MPI).
    pub fn test(&mut self) -> Result<bool, String> {
        let mut i = 0;
        while i < self.reqs.len() {
            let mut flag = 0;
            // SAFETY: the request is live (not yet completed); status ignored.
            check(unsafe { ffi::MPI_Test(&mut self.reqs[i], &mut flag, ffi::RSMPI_STATUS_IGNORE) })?;
            if flag != 0 {
                self.reqs.swap_remove(i);
            } else {
                i += 1;
            }
        }
        Ok(self.reqs.is_empty())
    }
}

/// A frame being sent: its requests and the buffers they read from.
pub(crate) struct Sending {
    /// Destination rank.
    pub dest: i32,
    reqs: Requests,
    _keep: (Vec<u8>, Vec<Bytes>),
}

impl Sending {
    /// Whether the whole frame has left this process's buffers.
    pub fn test(&mut self) -> Result<bool, String> {
        self.reqs.test()
    }
}

fn isend(buf: &[u8], dest: i32, tag: c_int, reqs: &mut Requests) -> Result<(), String> {
    debug_assert!(buf.len() <= CHUNK);
    let mut r = unsafe { ffi::RSMPI_REQUEST_NULL };
    // SAFETY: `buf` stays alive and unmoved until the request completes (kept in `Sending`).
    check(unsafe {
        ffi::MPI_Isend(
            buf.as_ptr() as *const c_void,
            buf.len() as c_int,
            ffi::RSMPI_UINT8_T,
            dest,
            tag,
            ffi::RSMPI_COMM_WORLD,
            &mut r,
        )
    })?;
    reqs.push(r);
    Ok(())
}

/// Starts sending `frame` to `dest` (its shared-memory segments as bytes).
pub(crate) fn send_frame(dest: i32, frame: Frame) -> Result<Sending, String> {
    send_frame_shared(dest, frame, false)
}

/// Starts sending `frame` to `dest`; with `share` (`dest` sees this run's shared-memory
/// directory), its named shared-memory segments go as their names instead of their bytes.
pub(crate) fn send_frame_shared(dest: i32, frame: Frame, share: bool) -> Result<Sending, String> {
    let mut reqs = Requests::default();
    if frame.payload_len() <= SMALL {
        let buf = frame.to_vec();
        isend(&buf, dest, TAG_FRAME, &mut reqs)?;
        return Ok(Sending { dest, reqs, _keep: (buf, Vec::new()) });
    }
    let names: Vec<Option<String>> = frame
        .segments
        .iter()
        .map(|s| {
            let seg = crate::shm::segment_of(s).filter(|_| share)?;
            let name = crate::shm::name_for_send(&seg)?;
            seg.sent();
            Some(name)
        })
        .collect();
    let mut head = Vec::with_capacity(4 + 8 * frame.segments.len() + frame.header.len());
    head.extend_from_slice(&(frame.segments.len() as u32).to_le_bytes());
    for (s, n) in frame.segments.iter().zip(&names) {
        let flag = if n.is_some() { SHARED } else { 0 };
        head.extend_from_slice(&(s.len() as u64 | flag).to_le_bytes());
    }
    for n in names.iter().flatten() {
        head.extend_from_slice(&(n.len() as u16).to_le_bytes());
        head.extend_from_slice(n.as_bytes());
    }
    head.extend_from_slice(&frame.header);
    isend(&head, dest, TAG_HEAD, &mut reqs)?;
    for (s, n) in frame.segments.iter().zip(&names) {
        if n.is_some() {
            continue;
        }
        for c in s.chunks(CHUNK) {
            isend(c, dest, TAG_SEG, &mut reqs)?;
        }
    }
    Ok(Sending { dest, reqs, _keep: (head, frame.segments) })
}

/// A message being received.
struct Piece {
    tag: c_int,
    buf: Vec<u8>,
    len: usize,
    req: ffi::MPI_Request,
    done: bool,
}

/// Frames arriving from any number of sources, reassembled per source in send order.
#[derive(Default)]
pub(crate) struct Inbox {
    /// By source rank.
    by_source: Vec<VecDeque<Piece>>,
    /// Sources whose frames are taken only by [`take_from`](Self::take_from) (each announced in
    /// a same-node lane: see [`super::lane`]).
    announced: Vec<bool>,
}

impl Inbox {
    /// Matches every message that has arrived from `source` (or any source, `None`) and starts
    /// receiving it. Returns whether anything was matched.
    pub fn poll(&mut self, source: Option<i32>) -> Result<bool, String> {
        let src = source.unwrap_or(unsafe { ffi::RSMPI_ANY_SOURCE });
        let mut any = false;
        loop {
            let mut flag = 0;
            let mut msg = unsafe { ffi::RSMPI_MESSAGE_NULL };
            // SAFETY: zeroed MPI_Status is a valid out-parameter.
            let mut st: ffi::MPI_Status = unsafe { std::mem::zeroed() };
            // SAFETY: valid out-pointers on the world communicator.
            check(unsafe {
                ffi::MPI_Improbe(src, ffi::RSMPI_ANY_TAG, ffi::RSMPI_COMM_WORLD, &mut flag, &mut msg, &mut st)
            })?;
            if flag == 0 {
                return Ok(any);
            }
            any = true;
            let mut count = 0;
            // SAFETY: st was filled by the matched probe.
            check(unsafe { ffi::MPI_Get_count(&st, ffi::RSMPI_UINT8_T, &mut count) })?;
            let len = count.max(0) as usize;
            let mut buf: Vec<u8> = Vec::with_capacity(len);
            let mut req = unsafe { ffi::RSMPI_REQUEST_NULL };
            // SAFETY: the buffer has `len` bytes of capacity and is kept, unmoved on the heap,
            // until the request completes (or forever, if its source is dropped).
            check(unsafe {
                ffi::MPI_Imrecv(buf.as_mut_ptr() as *mut c_void, count, ffi::RSMPI_UINT8_T, &mut msg, &mut req)
            })?;
            let src = usize::try_from(st.MPI_SOURCE).map_err(|_| format!("message from rank {}", st.MPI_SOURCE))?;
            if self.by_source.len() <= src {
                self.by_source.resize_with(src + 1, VecDeque::new);
            }
            self.by_source[src].push_back(Piece { tag: st.MPI_TAG, buf, len, req, done: false });
        }
    }

    /// The next complete frame, with its source and tag (the text of [`TAG_WATCH`],
    /// [`TAG_LOST`] and [`TAG_SHM`] messages comes as a header-only frame).
    pub(crate) fn take_frame(&mut self) -> Result<Option<(i32, c_int, Frame)>, String> {
        // Called on every poll of a waiting loop: no allocation, nothing to do when nothing came.
        for s in 0..self.by_source.len() {
            if !self.by_source[s].is_empty()
                && !self.announced.get(s).is_some_and(|&a| a)
                && let Some(f) = self.next_from(s)?
            {
                return Ok(Some((s as i32, f.0, f.1)));
            }
        }
        Ok(None)
    }

    /// From now on, frames from `source` are taken only by [`take_from`](Self::take_from).
    pub(crate) fn announced_only(&mut self, source: i32) {
        if let Ok(s) = usize::try_from(source) {
            if self.announced.len() <= s {
                self.announced.resize(s + 1, false);
            }
            self.announced[s] = true;
        }
    }

    /// The next complete frame from `source`, with its tag.
    pub(crate) fn take_from(&mut self, source: i32) -> Result<Option<(c_int, Frame)>, String> {
        match usize::try_from(source) {
            Ok(s) => self.next_from(s),
            Err(_) => Ok(None),
        }
    }

    /// Whether receives are under way.
    pub fn busy(&self) -> bool {
        self.by_source.iter().any(|q| !q.is_empty())
    }

    /// Abandons everything from `source` (it died): its buffers are never freed, since MPI may
    /// still hold them.
    pub(crate) fn drop_source(&mut self, source: i32) {
        if let Some(q) = usize::try_from(source).ok().and_then(|s| self.by_source.get_mut(s)) {
            for p in q.drain(..) {
                if !p.done {
                    std::mem::forget(p.buf);
                }
            }
        }
    }

    fn next_from(&mut self, source: usize) -> Result<Option<(c_int, Frame)>, String> {
        let Some(q) = self.by_source.get_mut(source) else { return Ok(None) };
        // Test the pieces in order up to the first incomplete one.
        for p in q.iter_mut() {
            if !p.done {
                let mut flag = 0;
                // SAFETY: live request.
                check(unsafe { ffi::MPI_Test(&mut p.req, &mut flag, ffi::RSMPI_STATUS_IGNORE) })?;
                if flag == 0 {
                    break;
                }
                // SAFETY: MPI wrote exactly `len` bytes.
                unsafe { p.buf.set_len(p.len) };
                p.done = true;
            }
        }
        let Some(first) = q.front() else { return Ok(None) };
        if !first.done {
            return Ok(None);
        }
        match first.tag {
            TAG_FRAME | TAG_WATCH | TAG_LOST | TAG_SHM => {
                let p = q.pop_front().unwrap();
                let frame = if p.tag != TAG_FRAME {
                    Frame { header: p.buf, segments: Vec::new() }
                } else {
                    Frame::from_bytes(Bytes::from(p.buf)).map_err(|e| e.to_string())?
                };
                Ok(Some((p.tag, frame)))
            }
            TAG_HEAD => {
                let (lens, header) = parse_head(&first.buf).map_err(|e| e.to_string())?;
                let chunks: usize = lens.iter().map(|l| if l.1.is_some() { 0 } else { l.0.div_ceil(CHUNK) }).sum();
                if q.len() < 1 + chunks || !q.iter().skip(1).take(chunks).all(|p| p.done) {
                    return Ok(None);
                }
                if let Some(p) = q.iter().skip(1).take(chunks).find(|p| p.tag != TAG_SEG) {
                    return Err(format!("protocol error: expected a segment from rank {}, got tag {}", source, p.tag));
                }
                q.pop_front();
                let mut segments = Vec::with_capacity(lens.len());
                for (len, name) in lens {
                    if let Some(name) = name {
                        let seg = crate::shm::Segment::open(&name, len).map_err(|e| {
                            format!(
                                "protocol error: cannot open shared-memory segment {} from rank {}: {}",
                                name, source, e
                            )
                        })?;
                        segments.push(seg);
                        continue;
                    }
                    let n = len.div_ceil(CHUNK);
                    if n == 1 {
                        let p = q.pop_front().unwrap();
                        if p.len != len {
                            return Err(format!("protocol error: segment of {} bytes, expected {}", p.len, len));
                        }
                        segments.push(Bytes::from(p.buf));
                    } else {
                        let mut all = Vec::with_capacity(len);
                        for _ in 0..n {
                            all.extend_from_slice(&q.pop_front().unwrap().buf);
                        }
                        if all.len() != len {
                            return Err(format!("protocol error: segment of {} bytes, expected {}", all.len(), len));
                        }
                        segments.push(Bytes::from(all));
                    }
                }
                Ok(Some((TAG_FRAME, Frame { header, segments })))
            }
            t => Err(format!("protocol error: unexpected message tag {} from rank {}", t, source)),
        }
    }
}

/// A segment's length and, for a shared-memory segment, its name.
type SegmentHead = (usize, Option<String>);

/// A head: each segment's length and, for a shared-memory segment, its name; then the header.
fn parse_head(b: &[u8]) -> Result<(Vec<SegmentHead>, Vec<u8>), ProtocolError> {
    let bad = || ProtocolError::Frame(format!("bad frame head ({} bytes)", b.len()));
    let n = u32::from_le_bytes(b.get(..4).ok_or_else(bad)?.try_into().unwrap()) as usize;
    let mut end = 4usize.checked_add(n.checked_mul(8).ok_or_else(bad)?).ok_or_else(bad)?;
    let raw: Vec<u64> =
        b.get(4..end).ok_or_else(bad)?.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    let mut lens = Vec::with_capacity(n);
    for r in raw {
        let len = usize::try_from(r & !SHARED).map_err(|_| bad())?;
        if r & SHARED == 0 {
            lens.push((len, None));
            continue;
        }
        let l = u16::from_le_bytes(b.get(end..end + 2).ok_or_else(bad)?.try_into().unwrap()) as usize;
        let name = b.get(end + 2..end + 2 + l).ok_or_else(bad)?;
        lens.push((len, Some(String::from_utf8(name.to_vec()).map_err(|_| bad())?)));
        end += 2 + l;
    }
    Ok((lens, b[end..].to_vec()))
}

/// Sends `text` with `tag` ([`TAG_WATCH`], [`TAG_LOST`], [`TAG_SHM`]) to `dest`.
pub(crate) fn send_text(dest: i32, tag: c_int, text: &str) -> Result<Sending, String> {
    let buf = text.as_bytes().to_vec();
    let mut reqs = Requests::default();
    isend(&buf, dest, tag, &mut reqs)?;
    Ok(Sending { dest, reqs, _keep: (buf, Vec::new()) })
}
