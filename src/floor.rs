//! What the machine allows a process pool, without taps: one driver thread keeps `in_flight`
//! requests out to `workers` forked worker processes, each of which answers every request at
//! once, and counts answers per second. Three transports:
//!
//! * [`Transport::SocketBlocking`]: 128-byte messages over Unix stream sockets (one socket pair
//!   per worker, as taps' process-pool has); the worker blocks in `read`, the driver in `poll`;
//! * [`Transport::SocketPolling`]: the same messages, both sides polling non-blocking reads and
//!   yielding the CPU every [`YIELD_EVERY`] empty polls (taps' workers and waiting threads poll
//!   this way before they sleep);
//! * [`Transport::SharedMemory`]: a request counter and an answer counter per worker on cache
//!   lines of a shared mapping, both sides polling (yielding as above): no system call per task.
//!
//! `taps bench` reports these beside the process-pool's figure: how far taps is from what the
//! transport allows on this machine, and what another transport would allow.
//!
//! The workers are `fork`ed children that make only async-signal-safe calls (`read`, `write`,
//! `poll`, `sched_yield`, `getppid`, `_exit`) on memory set up before the fork, so forking a
//! process that has other threads is safe; they die with the driver (`PR_SET_PDEATHSIG`).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Bytes of a socket message (a task's `Run` and `Done` frames of a no-op are about this size).
pub const MESSAGE: usize = 128;
/// Empty polls between two `sched_yield`s while polling.
pub const YIELD_EVERY: u32 = 16;

/// How requests and answers travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Unix stream sockets, blocking reads.
    SocketBlocking,
    /// Unix stream sockets, polled with non-blocking reads.
    SocketPolling,
    /// Counters in shared memory, polled.
    SharedMemory,
}

impl Transport {
    /// Every transport, in report order.
    pub const ALL: [Transport; 3] = [Transport::SocketBlocking, Transport::SocketPolling, Transport::SharedMemory];

    /// How the report names it.
    pub fn describe(self) -> &'static str {
        match self {
            Transport::SocketBlocking => "unix sockets, blocking reads (worker: read; driver: poll)",
            Transport::SocketPolling => "unix sockets, polled (non-blocking reads, sched_yield every 16 empty polls)",
            Transport::SharedMemory => "shared memory, polled (a counter each way per worker, no system call per task)",
        }
    }
}

/// One measurement: `answers` requests answered in `seconds`.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Requests answered (every one sent).
    pub answers: u64,
    /// From the first request to the last answer.
    pub seconds: f64,
}

impl Measured {
    /// Answers per second.
    pub fn per_second(&self) -> f64 {
        self.answers as f64 / self.seconds
    }
}

/// The forked workers: killed and reaped when dropped (also if the measurement fails).
struct Children(Vec<libc::pid_t>);

impl Drop for Children {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: our own children, not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

impl Children {
    /// An error if a child has ended (it was killed: they end only when told): waiting for its
    /// answers would never end.
    fn check(&mut self) -> io::Result<()> {
        for i in 0..self.0.len() {
            let pid = self.0[i];
            // SAFETY: our own child; reaps it if it ended.
            if unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } == pid {
                self.0.swap_remove(i);
                return Err(io::Error::other(format!("worker process {} of the floor measurement ended", pid)));
            }
        }
        Ok(())
    }
}

/// Forks a child that runs `body` and exits; the child dies with this process.
///
/// `body` must make only async-signal-safe calls and must not allocate.
fn fork(children: &mut Children, body: impl FnOnce()) -> io::Result<()> {
    // SAFETY: plain syscalls; the child runs only `body` (async-signal-safe) and `_exit`.
    let parent = unsafe { libc::getpid() };
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls only.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(0);
            }
        }
        body();
        // SAFETY: ends the child without running the parent's destructors or atexit handlers.
        unsafe { libc::_exit(0) };
    }
    children.0.push(pid);
    Ok(())
}

/// Measures `tasks` requests through `transport` to `workers` worker processes with `in_flight`
/// requests out at a time (spread round-robin; an answered request's worker gets the next one).
pub fn measure(transport: Transport, workers: usize, in_flight: usize, tasks: u64) -> io::Result<Measured> {
    let workers = workers.max(1);
    let in_flight = in_flight.max(1);
    match transport {
        Transport::SharedMemory => shared_memory(workers, in_flight, tasks),
        Transport::SocketBlocking => sockets(workers, in_flight, tasks, false),
        Transport::SocketPolling => sockets(workers, in_flight, tasks, true),
    }
}

/// An empty poll: counts it, and yields the CPU every [`YIELD_EVERY`] of them.
fn empty_poll(tries: &mut u32) {
    *tries = tries.wrapping_add(1);
    if tries.is_multiple_of(YIELD_EVERY) {
        // SAFETY: plain syscall.
        unsafe { libc::sched_yield() };
    } else {
        std::hint::spin_loop();
    }
}

/// Polls `ready` until it is true ([`empty_poll`] between tries).
fn poll_until(mut ready: impl FnMut() -> bool) {
    let mut tries = 0u32;
    while !ready() {
        empty_poll(&mut tries);
    }
}

/// A page per worker: requests at offset 0, answers at 128 (cache lines of their own).
fn shared_memory(workers: usize, in_flight: usize, tasks: u64) -> io::Result<Measured> {
    const PAGE: usize = 4096;
    let len = PAGE * workers;
    // SAFETY: a fresh anonymous shared mapping, unmapped below (the children exit first).
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    struct Map(*mut libc::c_void, usize);
    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: the mapping made above.
            unsafe { libc::munmap(self.0, self.1) };
        }
    }
    let map = Map(base, len);
    let counter = |w: usize, at: usize| -> &AtomicU64 {
        // SAFETY: inside the mapping, 8-byte aligned, zeroed at creation; used only atomically.
        unsafe { &*((map.0 as *mut u8).add(PAGE * w + at) as *const AtomicU64) }
    };
    const STOP: u64 = u64::MAX;
    let mut children = Children(Vec::new());
    for w in 0..workers {
        let (req, ans) = (counter(w, 0), counter(w, 128));
        fork(&mut children, || {
            let mut answered = 0u64;
            loop {
                poll_until(|| req.load(Ordering::Acquire) != answered);
                if req.load(Ordering::Acquire) == STOP {
                    return;
                }
                answered += 1;
                ans.store(answered, Ordering::Release);
            }
        })?;
    }
    let start = Instant::now();
    let mut sent = vec![0u64; workers];
    let mut seen = vec![0u64; workers];
    let mut out = 0u64;
    for i in 0..in_flight.min(tasks as usize) {
        sent[i % workers] += 1;
        counter(i % workers, 0).store(sent[i % workers], Ordering::Release);
        out += 1;
    }
    let mut answers = 0u64;
    let mut tries = 0u32;
    while answers < tasks {
        let mut any = false;
        for w in 0..workers {
            let now = counter(w, 128).load(Ordering::Acquire);
            while seen[w] < now {
                seen[w] += 1;
                answers += 1;
                any = true;
                if out < tasks {
                    sent[w] += 1;
                    out += 1;
                    counter(w, 0).store(sent[w], Ordering::Release);
                }
            }
        }
        if !any {
            empty_poll(&mut tries);
            // A worker killed meanwhile would never answer: look now and then.
            if tries.is_multiple_of(1 << 14) {
                children.check()?;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    for w in 0..workers {
        counter(w, 0).store(STOP, Ordering::Release);
    }
    for &pid in &children.0 {
        // SAFETY: our child; it exits on STOP.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    children.0.clear();
    drop(map);
    Ok(Measured { answers, seconds })
}

/// Reads exactly `buf.len()` bytes from `fd` (polling if `polling`); false at end of stream or on error.
fn read_all(fd: i32, buf: &mut [u8], polling: bool) -> bool {
    let mut got = 0;
    let mut tries = 0u32;
    while got < buf.len() {
        // SAFETY: reading into the unfilled part of `buf`.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr() as *mut libc::c_void, buf.len() - got) };
        if n > 0 {
            got += n as usize;
        } else if n == 0 {
            return false;
        } else {
            let e = io::Error::last_os_error().raw_os_error();
            if e == Some(libc::EAGAIN) && polling {
                empty_poll(&mut tries);
            } else if e != Some(libc::EINTR) {
                return false;
            }
        }
    }
    true
}

/// Writes all of `buf` to `fd` (blocking socket, or a polled one with room for it).
fn write_all(fd: i32, buf: &[u8]) -> bool {
    let mut put = 0;
    while put < buf.len() {
        // SAFETY: writing from `buf`.
        let n = unsafe { libc::write(fd, buf[put..].as_ptr() as *const libc::c_void, buf.len() - put) };
        if n > 0 {
            put += n as usize;
        } else {
            let e = io::Error::last_os_error().raw_os_error();
            if e != Some(libc::EINTR) && e != Some(libc::EAGAIN) {
                return false;
            }
        }
    }
    true
}

fn sockets(workers: usize, in_flight: usize, tasks: u64, polling: bool) -> io::Result<Measured> {
    struct Fd(i32);
    impl Drop for Fd {
        fn drop(&mut self) {
            // SAFETY: our descriptor.
            unsafe { libc::close(self.0) };
        }
    }
    let mut children = Children(Vec::new());
    let mut fds = Vec::new();
    let nonblocking = |fd: i32| {
        // SAFETY: plain fcntl on our descriptor.
        unsafe { libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK) };
    };
    for _ in 0..workers {
        let mut sv = [0i32; 2];
        // SAFETY: valid out-array of two descriptors.
        if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let (mine, theirs) = (Fd(sv[0]), Fd(sv[1]));
        let others: Vec<i32> = fds.iter().map(|f: &Fd| f.0).collect();
        let child = theirs.0;
        let mut buf = [0u8; MESSAGE];
        fork(&mut children, move || {
            // SAFETY: closing descriptors this child does not use (the others' ends and ours).
            unsafe {
                libc::close(sv[0]);
                for &fd in &others {
                    libc::close(fd);
                }
            }
            if polling {
                nonblocking(child);
            }
            while read_all(child, &mut buf, polling) && write_all(child, &buf) {}
        })?;
        drop(theirs);
        if polling {
            nonblocking(mine.0);
        }
        fds.push(mine);
    }
    let msg = [7u8; MESSAGE];
    let mut inbox = vec![([0u8; MESSAGE], 0usize); workers];
    let fail = |what: &str| io::Error::other(format!("transport floor: a worker {}", what));
    let start = Instant::now();
    let mut out = 0u64;
    for i in 0..in_flight.min(tasks as usize) {
        if !write_all(fds[i % workers].0, &msg) {
            return Err(fail("closed its socket"));
        }
        out += 1;
    }
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|f| libc::pollfd { fd: f.0, events: libc::POLLIN, revents: 0 }).collect();
    let mut answers = 0u64;
    let mut tries = 0u32;
    while answers < tasks {
        if !polling {
            // SAFETY: valid array of pollfds.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 10_000) };
            if n == 0 {
                return Err(fail("did not answer within 10 s"));
            }
        }
        let mut any = false;
        for w in 0..workers {
            if !polling && pfds[w].revents == 0 {
                continue;
            }
            let (buf, got) = &mut inbox[w];
            // SAFETY: reading into the unfilled part of the worker's inbox.
            let n = unsafe {
                libc::recv(fds[w].0, buf[*got..].as_mut_ptr() as *mut libc::c_void, MESSAGE - *got, libc::MSG_DONTWAIT)
            };
            if n == 0 {
                return Err(fail("closed its socket"));
            }
            if n < 0 {
                continue;
            }
            *got += n as usize;
            if *got == MESSAGE {
                *got = 0;
                answers += 1;
                any = true;
                if out < tasks {
                    if !write_all(fds[w].0, &msg) {
                        return Err(fail("closed its socket"));
                    }
                    out += 1;
                }
            }
        }
        if polling && !any {
            empty_poll(&mut tries);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    // Closing our ends ends the workers (end of stream); Children reaps them.
    drop(fds);
    for &pid in &children.0 {
        // SAFETY: our child; it exits at the end of its stream.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    children.0.clear();
    Ok(Measured { answers, seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transport_answers_every_request() {
        for t in Transport::ALL {
            for (workers, in_flight) in [(1, 1), (2, 2), (2, 5)] {
                let m = measure(t, workers, in_flight, 3_000).unwrap();
                assert_eq!(m.answers, 3_000, "{:?} {} workers {} in flight", t, workers, in_flight);
                assert!(m.per_second() > 0.0);
            }
        }
    }

    #[test]
    fn a_killed_worker_ends_the_shared_memory_measurement_with_an_error() {
        // The forked workers carry this thread's name (the test's, cut to 15 bytes).
        let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap().trim().to_string();
        let me = std::process::id();
        let killer = std::thread::spawn(move || {
            for _ in 0..500 {
                std::thread::sleep(std::time::Duration::from_millis(20));
                let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", me)) else { continue };
                let children: Vec<i32> = tasks
                    .flatten()
                    .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                    .flat_map(|c| c.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>())
                    .filter(|p| std::fs::read_to_string(format!("/proc/{}/comm", p)).is_ok_and(|c| c.trim() == comm))
                    .collect();
                if let Some(&pid) = children.first() {
                    // SAFETY: a child forked by this test's measurement.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return true;
                }
            }
            false
        });
        // Enough requests to outlast the killer (a minute at most if it found nothing).
        let e = measure(Transport::SharedMemory, 2, 2, 20_000_000).unwrap_err();
        assert!(killer.join().unwrap(), "a worker was found and killed");
        assert!(e.to_string().contains("of the floor measurement ended"), "{}", e);
    }
}
