//! Shared memory for large payloads between the processes of one node: a value of at least
//! [`MIN_SHARED`] serialised bytes is encoded straight into a *segment* (a shared-memory file
//! mapped into this process), and executors pass the segment instead of its bytes.
//!
//! * process-pool: segments are anonymous (`memfd_create`) and travel as file descriptors
//!   (`SCM_RIGHTS`) beside the frame on the worker's Unix socket. Nothing has a name, so nothing
//!   can be left behind: the kernel frees a segment when its last descriptor and mapping are gone,
//!   whatever happens to either process.
//! * MPI, ranks on the driver's node: segments are files of a run-unique prefix in a shared
//!   directory (`/dev/shm`), named in the message instead of their bytes ([`Run`]). The driver
//!   removes whatever of its prefix is left at the end of the run ([`Run::cleanup`]: also after
//!   a lost rank or an interrupted run), a worker rank the names it made when it exits or is
//!   signalled, and every name of the run when rank 0 died ([`leave`]). Ranks on other nodes get the bytes in the message.
//!
//! The receiver maps a segment and hands it on as a [`Bytes`] over the mapping: the task
//! deserialises from it in place, and a value may keep parts of it without copying them
//! ([`borrow`]: a tile or a byte string read where it lies, the segment kept from reuse while it
//! is borrowed). A value that borrows its whole encoding from a segment is passed on as that
//! segment when it is sent again ([`offer`]). A received segment passed on again (a task's result given to
//! the next task) goes as the same segment, without a copy ([`segment_of`]). Faulting in fresh
//! shared memory costs more than copying the payload, so both sides keep idle mappings for
//! reuse (up to [`KEEP_BYTES`] each): the maker writes into a segment again once no other
//! process uses it (a use count in the segment's trailer), the receiver finds a segment it has
//! mapped before by its inode.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;

/// Values whose serialised form has at least this many bytes are encoded into a segment.
pub const MIN_SHARED: usize = 256 << 10;

/// Most segments passed as descriptors with one frame (the rest go inline).
pub(crate) const MAX_FDS: usize = 32;

/// Bytes at the end of every segment file holding the count of its uses in other processes.
const TRAILER: usize = 64;
/// Segment files are sized in multiples of this.
const GRAIN: usize = 64 << 10;
/// Idle mappings kept for reuse, per kind (made here, received), at most this many bytes.
const KEEP_BYTES: usize = 256 << 20;

/// A mapped segment file. Fresh shared memory is expensive to fault in (page allocation and
/// zeroing cost more than copying the payload), so mappings are reused. The last [`TRAILER`]
/// bytes of the file count the uses of it in other processes: a sender adds one per send, a
/// receiver takes it off when it drops the segment; the process that made the segment writes
/// into it again only when that count is zero.
struct Mapping {
    ptr: *mut u8,
    cap: usize,
    fd: OwnedFd,
    /// Device and inode: a received segment mapped before is found again by them.
    key: (u64, u64),
    /// Its file name, when it has one (MPI); removed when its maker discards it unused.
    name: Option<PathBuf>,
    /// Made by this process (else received).
    made: bool,
}

// SAFETY: the mapping is plain shared memory, valid until drop.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(fd: OwnedFd, name: Option<PathBuf>, made: bool) -> io::Result<Mapping> {
        // SAFETY: zeroed stat is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let cap = st.st_size as usize;
        if cap <= TRAILER || !cap.is_multiple_of(GRAIN) {
            return Err(io::Error::other(format!("not a taps shared-memory segment ({} bytes)", cap)));
        }
        // Page tables filled at once: the pages exist (`fallocate`, or the sender wrote them), and
        // faulting them in one by one as a tile is written or read cost ~30,000 page faults
        // (~8 % of the CPU time) per cholesky factorisation n=4000 on process-pool.
        let flags = libc::MAP_SHARED | libc::MAP_POPULATE;
        // SAFETY: mapping a whole file of `cap` bytes; unmapped in drop.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), cap, libc::PROT_READ | libc::PROT_WRITE, flags, fd.as_raw_fd(), 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: ptr as *mut u8, cap, fd, key: (st.st_dev, st.st_ino), name, made })
    }

    /// Uses of the segment in other processes.
    fn uses(&self) -> &AtomicU64 {
        // SAFETY: the trailer is inside the mapping, 64-byte aligned (cap is a multiple of GRAIN).
        unsafe { &*(self.ptr.add(self.cap - TRAILER) as *const AtomicU64) }
    }

    fn room(&self) -> usize {
        self.cap - TRAILER
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let unused = self.uses().load(Ordering::SeqCst) == 0;
        // SAFETY: our own mapping, no longer referenced.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.cap) };
        if let Some(p) = &self.name
            && self.made
            && unused
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Idle mappings: made here (reused once no other process uses them), and received (found
/// again when the same segment comes back).
static MADE: Mutex<Vec<Mapping>> = Mutex::new(Vec::new());
static RECEIVED_MAPS: Mutex<Vec<Mapping>> = Mutex::new(Vec::new());

/// Keeps `m` for reuse in `pool`, dropping the oldest beyond [`KEEP_BYTES`].
fn keep(pool: &Mutex<Vec<Mapping>>, m: Mapping) {
    let mut dropped = Vec::new();
    {
        let mut p = pool.lock().unwrap();
        p.push(m);
        let mut total: usize = p.iter().map(|m| m.cap).sum();
        while total > KEEP_BYTES {
            let old = p.remove(0);
            total -= old.cap;
            dropped.push(old);
        }
    }
    drop(dropped);
}

/// A payload in a shared-memory segment (the first `len` bytes of a mapping).
pub struct Segment {
    map: Option<Mapping>,
    len: usize,
    /// Received from another process (its use is counted in the trailer until dropped).
    received: bool,
}

// SAFETY: shared access is read-only (the bytes are written only through `SegmentMut`, before
// the segment is shared); the use count is atomic.
unsafe impl Sync for Segment {}

/// Live segments by mapping address, to find the segment behind a [`Bytes`].
static LIVE: Mutex<Option<HashMap<usize, Weak<Segment>>>> = Mutex::new(None);

impl Segment {
    fn m(&self) -> &Mapping {
        self.map.as_ref().expect("mapped until dropped")
    }

    /// The payload's bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: a live mapping of more than `len` bytes.
        unsafe { std::slice::from_raw_parts(self.m().ptr, self.len) }
    }

    /// Length of the payload in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (segments are never empty).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Its descriptor (to pass to another process).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.m().fd.as_fd()
    }

    /// Its file name in the run's directory (MPI), if it has one.
    pub fn name(&self) -> Option<&str> {
        self.m().name.as_ref()?.file_name()?.to_str()
    }

    /// Counts a use of the segment by the process it is being sent to (which takes it off when
    /// it drops the segment). Every send of a segment must be counted.
    pub(crate) fn sent(&self) {
        self.m().uses().fetch_add(1, Ordering::SeqCst);
    }

    /// Maps a segment received as a descriptor, as bytes of length `len`.
    pub fn receive(fd: OwnedFd, len: usize) -> io::Result<Bytes> {
        Segment::received(fd, None, len)
    }

    fn received(fd: OwnedFd, name: Option<PathBuf>, len: usize) -> io::Result<Bytes> {
        // SAFETY: zeroed stat is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let key = (st.st_dev, st.st_ino);
        let take = |pool: &Mutex<Vec<Mapping>>| {
            let mut c = pool.lock().unwrap();
            c.iter().position(|m| m.key == key && m.cap == st.st_size as usize).map(|i| c.remove(i))
        };
        // One of ours coming back (a result of this worker passed to its next task) is read
        // through the mapping we wrote it in: a new mapping costs a page-table fill.
        let cached = take(&RECEIVED_MAPS).or_else(|| take(&MADE));
        let map = match cached {
            Some(m) => m,
            None => Mapping::new(fd, name, false)?,
        };
        // A segment shorter than its stated length would be read past its end.
        if len == 0 || map.room() < len {
            return Err(io::Error::other(format!("shared-memory segment of {} bytes, expected {}", map.room(), len)));
        }
        Ok(Arc::new(Segment { map: Some(map), len, received: true }).into_bytes())
    }

    /// Opens a named segment of the run (MPI), as bytes of length `len`.
    pub(crate) fn open(name: &str, len: usize) -> io::Result<Bytes> {
        let run = config().ok_or_else(|| io::Error::other("a named segment, but shared memory is not set up"))?;
        if name.contains('/') || !name.starts_with(&format!("{}-", run.prefix)) {
            return Err(io::Error::other(format!("segment name {:?} is not of this run", name)));
        }
        let path = run.dir.join(name);
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&path)?;
        Segment::received(f.into(), Some(path), len)
    }

    fn into_bytes(self: Arc<Self>) -> Bytes {
        let (addr, weak) = (self.m().ptr as usize, Arc::downgrade(&self));
        LIVE.lock().unwrap().get_or_insert_with(HashMap::new).insert(addr, weak);
        Bytes::from_owner(Owner(self))
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let Some(m) = self.map.take() else { return };
        if let Some(live) = LIVE.lock().unwrap().as_mut() {
            live.remove(&(m.ptr as usize));
        }
        if self.received {
            // This process's use of it is over: its maker may write into it again.
            let _ = m.uses().fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
        keep(if m.made { &MADE } else { &RECEIVED_MAPS }, m);
    }
}

/// Keeps a segment alive under a [`Bytes`].
struct Owner(Arc<Segment>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// The segment `b` is, if it is exactly the bytes of a live segment.
pub fn segment_of(b: &Bytes) -> Option<Arc<Segment>> {
    if b.len() < MIN_SHARED {
        return None;
    }
    let live = LIVE.lock().unwrap();
    let seg = live.as_ref()?.get(&(b.as_ptr() as usize))?.upgrade()?;
    (seg.len == b.len()).then_some(seg)
}

/// The name under which `seg` can be sent to a rank that shares the run's directory, if it
/// has one.
pub(crate) fn name_for_send(seg: &Segment) -> Option<String> {
    config()?;
    seg.name().map(str::to_string)
}

/// A new segment being written.
pub struct SegmentMut(Segment);

impl SegmentMut {
    /// A segment of `len` bytes to write: an idle one made before that no other process uses,
    /// else a new one with its memory allocated up front (a full `/dev/shm` is an error here,
    /// never a fault later) — a named file of the run when MPI set one up ([`Run`]), else an
    /// anonymous `memfd`.
    pub fn create(len: usize) -> io::Result<SegmentMut> {
        let need = len + TRAILER;
        let named = config();
        let reuse = {
            let mut p = MADE.lock().unwrap();
            p.iter()
                .position(|m| {
                    m.cap >= need
                        && m.cap <= need + need / 4 + GRAIN
                        && m.name.is_some() == named.is_some()
                        && m.uses().load(Ordering::SeqCst) == 0
                })
                .map(|i| p.remove(i))
        };
        let map = match reuse {
            Some(m) => m,
            None => Self::fresh(need.div_ceil(GRAIN) * GRAIN, named)?,
        };
        Ok(SegmentMut(Segment { map: Some(map), len, received: false }))
    }

    fn fresh(cap: usize, named: Option<Run>) -> io::Result<Mapping> {
        let (fd, name) = match named {
            Some(run) => {
                let n = SEQ.fetch_add(1, Ordering::Relaxed);
                let path = run.dir.join(format!("{}-{}-{}", run.prefix, run.who, n));
                let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
                (OwnedFd::from(f), Some(path))
            }
            None => {
                // SAFETY: a NUL-terminated name; the result is a fresh descriptor we own.
                let fd = unsafe { libc::memfd_create(c"taps-payload".as_ptr(), libc::MFD_CLOEXEC) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: fd is fresh and ours.
                (unsafe { OwnedFd::from_raw_fd(fd) }, None)
            }
        };
        let remove = |e: io::Error| {
            if let Some(p) = &name {
                let _ = std::fs::remove_file(p);
            }
            e
        };
        // SAFETY: plain syscall on our descriptor.
        if unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, cap as libc::off_t) } != 0 {
            return Err(remove(io::Error::last_os_error()));
        }
        Mapping::new(fd, name.clone(), true).map_err(remove)
    }

    /// The bytes to write.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: a live writable mapping of more than `len` bytes, not shared yet.
        unsafe { std::slice::from_raw_parts_mut(self.0.m().ptr, self.0.len) }
    }

    /// The written segment, as bytes that executors pass as the segment.
    pub fn freeze(self) -> Bytes {
        Arc::new(self.0).into_bytes()
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A whole file mapped read-only (for reading a large file in place), with the file kept open
/// as long as the mapping lives (so a lock taken on it is held that long).
struct FileMap {
    ptr: *mut u8,
    len: usize,
    _file: std::fs::File,
}

// SAFETY: a read-only mapping, valid until drop.
unsafe impl Send for FileMap {}

impl AsRef<[u8]> for FileMap {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: a live mapping of `len` bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// The bytes of `file`, which must be `len` bytes long, mapped read-only: read in place from
/// the page cache, without a copy. The file stays open while the bytes live (with any `flock`
/// taken on it: the `file` transformer's readers hold a shared one, so that it never rewrites a
/// file still mapped). The file must not shrink or change while the bytes live.
pub(crate) fn map_file(file: std::fs::File, len: usize) -> io::Result<Bytes> {
    let size = file.metadata()?.len();
    if size != len as u64 || len == 0 {
        return Err(io::Error::other(format!("{} bytes, expected {}", size, len)));
    }
    // SAFETY: mapping `len` bytes of a file that long; unmapped when the bytes are dropped.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(Bytes::from_owner(FileMap { ptr: ptr as *mut u8, len, _file: file }))
}

/// Encodes a value into a segment when its serialised form is at least [`MIN_SHARED`] bytes and
/// a segment can be made; otherwise into ordinary memory.
/// A value whose whole encoding is a segment it borrows ([`offer`]) is that segment, sent again
/// without a copy.
pub(crate) fn encode(l: &crate::task::LocalValue) -> Result<Bytes, crate::task::TaskError> {
    let (len, offered) = measuring(|| (l.encoded_len)(&*l.value));
    let len = len?;
    // One offer as long as the whole encoding: every other part of the value encodes to
    // nothing, so the encoding is the offered bytes.
    if let Some(wire) = offered
        && wire.len() == len
        && segment_of(&wire).is_some()
    {
        return Ok(wire);
    }
    if len >= MIN_SHARED
        && let Ok(mut seg) = SegmentMut::create(len)
    {
        (l.encode_to)(&*l.value, seg.as_mut_slice())?;
        return Ok(seg.freeze());
    }
    (l.encode)(&*l.value).map(Bytes::from)
}

thread_local! {
    /// The large payload being decoded on this thread ([`decoding`]).
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
    /// What values offered while one is measured for encoding ([`measuring`]).
    static OFFERS: RefCell<Offers> = const { RefCell::new(Offers::Off) };
}

/// Runs `decode` with `payload` as the payload being decoded on this thread, so that the value
/// can [`borrow`] parts of it instead of copying them. Only payloads of at least [`MIN_SHARED`]
/// bytes are lent (a shared-memory segment or a mapped file; a small inline payload is copied).
pub(crate) fn decoding<R>(payload: &Bytes, decode: impl FnOnce() -> R) -> R {
    if payload.len() < MIN_SHARED {
        return decode();
    }
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SOURCE.with(|s| *s.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(SOURCE.with(|s| s.replace(Some(payload.clone()))));
    decode()
}

/// The payload being decoded on this thread and the offset of `part` in it, if `part` (bytes a
/// deserialiser handed to a `Deserialize` impl) lies inside it: the value may keep
/// `payload[offset..offset + part.len()]` instead of a copy. The payload's memory stays valid,
/// and a shared-memory segment is not reused by its maker, while any of it is kept.
pub fn source_of(part: &[u8]) -> Option<(Bytes, usize)> {
    SOURCE.with(|s| {
        let s = s.borrow();
        let src = s.as_ref()?;
        let (start, at) = (src.as_ptr() as usize, part.as_ptr() as usize);
        (at >= start && at + part.len() <= start + src.len()).then(|| (src.clone(), at - start))
    })
}

/// `part` of the payload being decoded on this thread, without a copy (see [`source_of`]).
pub fn borrow(part: &[u8]) -> Option<Bytes> {
    source_of(part).map(|(src, at)| src.slice(at..at + part.len()))
}

/// Deserialises a byte string as [`Bytes`] that borrow the payload being decoded when they can
/// ([`borrow`]), else a copy: `#[serde(deserialize_with = "taps::shm::bytes_in_place")]`.
pub fn bytes_in_place<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Bytes;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a byte string")
        }
        fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Bytes, E> {
            Ok(borrow(b).unwrap_or_else(|| Bytes::copy_from_slice(b)))
        }
        fn visit_byte_buf<E: serde::de::Error>(self, b: Vec<u8>) -> Result<Bytes, E> {
            Ok(b.into())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            let mut b = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(x) = seq.next_element::<u8>()? {
                b.push(x);
            }
            Ok(b.into())
        }
    }
    d.deserialize_bytes(V)
}

/// Offers while a value is measured for encoding.
enum Offers {
    /// Not measuring.
    Off,
    /// Measuring; these offers so far.
    On(Vec<Bytes>),
}

/// Declares, while a value is serialised, that `wire` is exactly this part's encoding (a value
/// that borrows its encoding from a received segment, see [`source_of`]). When the part is the
/// whole of a task's argument or result and `wire` is a whole shared-memory segment, the segment
/// is sent as it is instead of being encoded again. Elsewhere a no-op.
pub fn offer(wire: &Bytes) {
    OFFERS.with(|o| {
        if let Offers::On(v) = &mut *o.borrow_mut() {
            v.push(wire.clone());
        }
    })
}

/// Runs `measure` (which serialises a value to size it) and returns its result with the one
/// [`offer`] made meanwhile, if exactly one was.
fn measuring<R>(measure: impl FnOnce() -> R) -> (R, Option<Bytes>) {
    let outer = OFFERS.with(|o| o.replace(Offers::On(Vec::new())));
    let r = measure();
    let offers = OFFERS.with(|o| o.replace(outer));
    match offers {
        Offers::On(mut v) if v.len() == 1 => (r, v.pop()),
        _ => (r, None),
    }
}

/// This process's part in a run's named segments (MPI).
#[derive(Clone, Debug)]
pub(crate) struct Run {
    /// The shared directory (`/dev/shm`).
    pub dir: PathBuf,
    /// The run's prefix: every name the run creates there starts with `{prefix}-`.
    pub prefix: String,
    /// Who creates names here: `d` (the driver) or `r{rank}`.
    who: String,
}

static CONFIG: RwLock<Option<Run>> = RwLock::new(None);

fn config() -> Option<Run> {
    CONFIG.read().unwrap().clone()
}

/// The directory where MPI segments live, unless [`DIR_ENV`] names another.
pub(crate) const SHM_DIR: &str = "/dev/shm";
/// Environment variable naming the directory of MPI segments (read by rank 0).
pub const DIR_ENV: &str = "TAPS_SHM_DIR";

/// The directory for MPI segments: `$TAPS_SHM_DIR`, else `/dev/shm`.
/// Set by `taps run` for the MPI job it launches: the prefix rank 0 names its files with, so the
/// launcher, which outlives the job, can remove them even when every rank was killed.
pub const PREFIX_ENV: &str = "TAPS_SHM_PREFIX";

/// A fresh prefix for a run's files (`taps-` and 32 hex digits).
pub fn new_prefix() -> String {
    format!("taps-{}", uuid::Uuid::new_v4().simple())
}

fn valid_prefix(p: &str) -> bool {
    p.strip_prefix("taps-").is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Removes whatever files of the run named by `prefix` are left in the shared-memory directory.
pub fn remove_run_files(prefix: &str) {
    if valid_prefix(prefix) {
        remove_prefixed(&shm_dir(), &format!("{}-", prefix));
    }
}

pub(crate) fn shm_dir() -> PathBuf {
    std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()).map(PathBuf::from).unwrap_or_else(|| SHM_DIR.into())
}

/// Drops the idle mappings kept for reuse (their memory is freed once no other process maps
/// them): at the end of a run.
pub fn drop_idle() {
    let made = std::mem::take(&mut *MADE.lock().unwrap());
    let received = std::mem::take(&mut *RECEIVED_MAPS.lock().unwrap());
    drop((made, received));
}

impl Run {
    /// The driver's side: a fresh prefix in `dir`, with a probe file (named `{prefix}-probe`,
    /// holding the prefix) by which a rank tells that it sees the same directory. From now on
    /// this process's segments are named files.
    pub fn start_driver(dir: &Path) -> io::Result<Run> {
        let prefix = std::env::var(PREFIX_ENV)
            .ok()
            .filter(|p| valid_prefix(p))
            .unwrap_or_else(|| format!("taps-{}", uuid::Uuid::new_v4().simple()));
        let run = Run { dir: dir.to_path_buf(), prefix, who: "d".into() };
        let mut probe = std::fs::OpenOptions::new().write(true).create_new(true).open(run.probe())?;
        if let Err(e) = io::Write::write_all(&mut probe, run.prefix.as_bytes()) {
            let _ = std::fs::remove_file(run.probe());
            return Err(e);
        }
        *CONFIG.write().unwrap() = Some(run.clone());
        Ok(run)
    }

    /// A worker rank's side, from the driver's `dir` and `prefix`: whether this rank sees the
    /// driver's directory (then its segments are named files there, which the driver takes over).
    pub fn join(dir: &Path, prefix: &str, rank: i32) -> bool {
        if !valid_prefix(prefix) {
            return false;
        }
        let run = Run { dir: dir.to_path_buf(), prefix: prefix.into(), who: format!("r{}", rank) };
        if std::fs::read(run.probe()).ok().as_deref() != Some(prefix.as_bytes()) {
            return false;
        }
        *CONFIG.write().unwrap() = Some(run);
        true
    }

    fn probe(&self) -> PathBuf {
        self.dir.join(format!("{}-probe", self.prefix))
    }

    /// Removes every name of the run left in the directory, and stops naming segments. Nothing
    /// else there is touched.
    pub fn cleanup(&self) {
        let mut c = CONFIG.write().unwrap();
        if c.as_ref().is_some_and(|r| r.prefix == self.prefix) {
            *c = None;
        }
        drop(c);
        remove_prefixed(&self.dir, &format!("{}-", self.prefix));
    }
}

/// Removes the files of `dir` whose names start with `prefix`.
fn remove_prefixed(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_name().to_str().is_some_and(|n| n.starts_with(prefix)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A worker rank going away (a signal, the end of the run): removes the names it made. When
/// rank 0 is gone (`driver_gone`), nobody else will: it removes every name of the run.
pub(crate) fn leave(driver_gone: bool) {
    if let Some(run) = config()
        && run.who != "d"
    {
        let prefix = if driver_gone { format!("{}-", run.prefix) } else { format!("{}-{}-", run.prefix, run.who) };
        remove_prefixed(&run.dir, &prefix);
    }
}

thread_local! {
    /// Descriptors received on this thread's socket reads, in order.
    static RECEIVED: RefCell<VecDeque<OwnedFd>> = const { RefCell::new(VecDeque::new()) };
}

/// `recv` that keeps the descriptors passed with the bytes (in arrival order, for
/// [`take_received`]).
pub(crate) fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = [0u64; 64]; // room for MAX_FDS descriptors and more, aligned
    // SAFETY: zeroed msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: valid socket and message buffers.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                RECEIVED.with(|r| {
                    let mut r = r.borrow_mut();
                    for i in 0..count {
                        r.push_back(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                });
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptors passed with a frame were cut off"));
    }
    Ok(n as usize)
}

/// The next descriptor received on this thread (see [`recv`]).
pub(crate) fn take_received() -> Option<OwnedFd> {
    RECEIVED.with(|r| r.borrow_mut().pop_front())
}

/// Moves the descriptors received on this thread and not yet taken into `into` (after them):
/// a connection read by several threads in turn keeps its own (see [`restore_received`]).
pub(crate) fn stash_received(into: &mut VecDeque<OwnedFd>) {
    RECEIVED.with(|r| into.extend(r.borrow_mut().drain(..)));
}

/// Puts `from`'s descriptors before those received on this thread, in order, to be taken next.
pub(crate) fn restore_received(from: &mut VecDeque<OwnedFd>) {
    if from.is_empty() {
        return;
    }
    RECEIVED.with(|r| {
        let mut r = r.borrow_mut();
        while let Some(fd) = from.pop_back() {
            r.push_front(fd);
        }
    });
}

/// Sends `buf` on the stream socket `sock` with `fds` attached to its first byte; the bytes
/// sent (at least one, unless `buf` is empty).
pub(crate) fn send_with_fds(sock: BorrowedFd<'_>, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let space = if raw.is_empty() {
        0
    } else {
        // SAFETY: pure size computation.
        unsafe { libc::CMSG_SPACE(std::mem::size_of_val(raw.as_slice()) as u32) as usize }
    };
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: zeroed msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer has room for one SCM_RIGHTS message of `raw`.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(raw.as_slice()) as u32) as _;
            std::ptr::copy_nonoverlapping(raw.as_ptr(), libc::CMSG_DATA(c) as *mut RawFd, raw.len());
        }
    }
    loop {
        // SAFETY: valid socket and message; MSG_NOSIGNAL avoids SIGPIPE on a dead peer.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_is_found_behind_its_bytes_and_reused_once_released() {
        let mut s = SegmentMut::create(MIN_SHARED + 5).unwrap();
        s.as_mut_slice().iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        let b = s.freeze();
        let seg = segment_of(&b).expect("registered");
        assert_eq!(seg.len(), b.len());
        assert!(segment_of(&b.slice(1..)).is_none(), "a slice is not the segment");
        // Another process's view: the descriptor, received.
        seg.sent();
        let fd = seg.fd().try_clone_to_owned().unwrap();
        let again = Segment::receive(fd, b.len()).unwrap();
        assert_eq!(&again[..], &b[..]);
        let (addr, key) = (b.as_ptr() as usize, seg.m().key);
        drop((seg, b));
        assert!(LIVE.lock().unwrap().as_ref().is_none_or(|l| !l.contains_key(&addr)));
        // Still in use by the receiver: a new segment is not this one.
        let other = SegmentMut::create(MIN_SHARED + 5).unwrap();
        assert_ne!(other.0.m().key, key);
        drop((other, again));
        // Released: this one is reused.
        let idle = MADE.lock().unwrap().len();
        let reused = (0..idle + 1).map(|_| SegmentMut::create(MIN_SHARED + 5).unwrap()).collect::<Vec<_>>();
        assert!(reused.iter().any(|s| s.0.m().key == key));
    }

    /// Bytes that a decoded value reads in place ([`bytes_in_place`]).
    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    struct Raw(#[serde(deserialize_with = "bytes_in_place")] Bytes);

    #[test]
    fn a_value_read_in_place_keeps_its_segment_from_reuse_until_dropped() {
        use crate::task::Payload;
        let n = 4 * MIN_SHARED; // a size class no other test of this binary uses
        let Ok(Payload::Bytes(b)) = Payload::local(Raw(vec![7u8; n].into())).into_wire() else { panic!("bytes") };
        let seg = segment_of(&b).expect("a large value is encoded into a segment");
        let (key, len) = (seg.m().key, b.len());
        // Another process's view of it: sent (counted) and received by its descriptor.
        seg.sent();
        let fd = seg.fd().try_clone_to_owned().unwrap();
        drop((seg, b));
        let got = Segment::receive(fd, len).unwrap();
        let start = got.as_ptr() as usize;
        let v: Raw = Payload::Bytes(got).decode().unwrap();
        assert!(v.0.iter().all(|&x| x == 7) && v.0.len() == n);
        // In place: the bytes lie in the mapping, after the length's varint.
        assert_eq!(v.0.as_ptr() as usize - start, len - n);
        // The payload is gone, the value borrows it: its maker does not write into it.
        let idle = MADE.lock().unwrap().len();
        let fresh = (0..idle + 1).map(|_| SegmentMut::create(len).unwrap()).collect::<Vec<_>>();
        assert!(fresh.iter().all(|s| s.0.m().key != key), "a borrowed segment was reused");
        assert!(v.0.iter().all(|&x| x == 7));
        drop((fresh, v));
        // Dropped: reused.
        let idle = MADE.lock().unwrap().len();
        let again = (0..idle + 1).map(|_| SegmentMut::create(len).unwrap()).collect::<Vec<_>>();
        assert!(again.iter().any(|s| s.0.m().key == key));
        // A small payload is copied (nothing to lend), and so is anything outside a decode.
        let small: Bytes = crate::task::encode(&Raw(vec![1u8; 100].into())).unwrap().into();
        let v: Raw = Payload::Bytes(small.clone()).decode().unwrap();
        assert!(v.0.as_ptr() < small.as_ptr() || v.0.as_ptr() >= small.as_ptr().wrapping_add(small.len()));
        assert!(borrow(&small).is_none());
    }

    /// Minor page faults of this thread so far.
    fn minor_faults() -> i64 {
        // SAFETY: zeroed rusage is a valid out-parameter.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointer.
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
        u.ru_minflt
    }

    #[test]
    fn a_fresh_segment_is_written_without_page_faults() {
        let n = 8 * MIN_SHARED + GRAIN; // 2 MB + 64 kB: a size class no other test here uses
        let mut seg = SegmentMut::create(n).unwrap();
        let before = minor_faults();
        seg.as_mut_slice().fill(1);
        let faults = minor_faults() - before;
        // Without its page tables filled at mmap, each of its 528 pages faults once.
        assert!(faults < 16, "{} page faults writing a fresh {} byte segment", faults, n);
        assert!(seg.freeze().iter().all(|&b| b == 1));
    }

    #[test]
    fn a_short_segment_is_refused() {
        let s = SegmentMut::create(MIN_SHARED).unwrap().freeze();
        let fd = segment_of(&s).unwrap().fd().try_clone_to_owned().unwrap();
        assert!(Segment::receive(fd, MIN_SHARED + 2 * GRAIN).is_err());
    }
}
