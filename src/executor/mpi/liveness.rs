//! Liveness connections: every worker rank opens one TCP connection to rank 0 at start-up. When
//! a process dies, its kernel closes the connection, so the other side learns of the death at
//! once, on any node (TCP keepalive covers a node that vanishes without closing anything).
//!
//! A process that is stopped (SIGSTOP) or hung closes nothing, so each worker also sends a
//! heartbeat byte on the connection from a thread of its own ([`Heartbeat`]), independent of the
//! task it runs; rank 0 notes when each rank was last heard of ([`Beats`]), and its executor
//! treats a rank silent for `heartbeat_timeout` while it holds a task as lost.
//!
//! Rank 0 runs a [`Watcher`] thread that accepts the connections, takes the heartbeats and
//! reports each connection's end; a worker checks [`driver_gone`] while it waits for work, so it
//! exits if rank 0 dies.
//!
//! The connection is also a *doorbell* in both directions: a side that polls MPI backs off to
//! short sleeps once it has waited a while, and a message that arrives then would wait for the
//! sleep to end (up to a millisecond, on average half of it, for every task of a millisecond or
//! more). So a sender that expects its peer to be asleep rings it after the MPI send, with one
//! [`WAKE`] byte: a worker rank dozes in `ppoll` on its connection ([`doze`]) instead of
//! sleeping, and rank 0's watcher reports a ring as [`Event::Wake`], which wakes the
//! communication thread. Rings are hints only: a missed one costs what the sleep costs.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the watcher reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A worker rank's connection is up.
    Connected(i32),
    /// A worker rank's connection closed: the process is gone.
    Closed(i32),
    /// A worker rank rang the doorbell: it sent something over MPI.
    Wake(i32),
}

/// A heartbeat byte.
const BEAT: u8 = 0;
/// A doorbell byte: the sender has just sent an MPI message to the other side.
pub(crate) const WAKE: u8 = 1;

/// Sends one byte without blocking (a full socket buffer already rings); whether it went or
/// the buffer was full.
fn send_byte(c: &TcpStream, b: u8) -> bool {
    // SAFETY: valid socket and buffer; MSG_NOSIGNAL avoids SIGPIPE on a closed peer.
    let n = unsafe {
        libc::send(c.as_raw_fd(), [b].as_ptr() as *const libc::c_void, 1, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    n == 1 || io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

/// Rings the other side of a liveness connection (see the module's doorbell).
pub(crate) fn ring(c: &TcpStream) {
    send_byte(c, WAKE);
}

/// When each worker rank was last heard of on its liveness connection (heartbeat or connect).
#[derive(Default)]
pub(crate) struct Beats(Mutex<HashMap<i32, Instant>>);

impl Beats {
    fn note(&self, rank: i32) {
        self.0.lock().unwrap().insert(rank, Instant::now());
    }

    /// When `rank` was last heard of, if it ever connected.
    pub fn last(&self, rank: i32) -> Option<Instant> {
        self.0.lock().unwrap().get(&rank).copied()
    }
}

/// Rank 0's side: the listener thread.
pub(crate) struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// What workers need to connect: `PORT;HOSTNAME;IP,IP,...;HEARTBEAT_MS`.
    pub address: String,
    /// Heartbeats received.
    pub beats: Arc<Beats>,
    /// Each connected rank's connection, to ring it.
    doors: Arc<Mutex<HashMap<i32, TcpStream>>>,
}

impl Watcher {
    /// Listens on every interface, asks workers for a heartbeat every `beat`, and reports
    /// events through `report` (from its own thread).
    pub fn start(beat: Duration, report: impl Fn(Event) + Send + 'static) -> io::Result<Watcher> {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let ips: Vec<String> = local_ipv4().iter().map(|ip| ip.to_string()).collect();
        let address = format!("{};{};{};{}", port, crate::engine::hostname(), ips.join(","), beat.as_millis().max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let beats = Arc::new(Beats::default());
        let doors = Arc::new(Mutex::new(HashMap::new()));
        let (s, b, d) = (stop.clone(), beats.clone(), doors.clone());
        let thread = std::thread::Builder::new()
            .name("taps-mpi-watch".into())
            .spawn(move || watch(listener, s, b, d, report))?;
        Ok(Watcher { stop, thread: Some(thread), address, beats, doors })
    }

    /// Rings `rank` (it dozes on its connection while it waits for work); nothing if it has
    /// no connection.
    pub fn ring(&self, rank: i32) {
        if let Some(c) = self.doors.lock().unwrap().get(&rank) {
            ring(c);
        }
    }

    /// Stops watching (ranks that exit from now on are not reported). The thread notices
    /// within its poll interval and ends by itself.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        drop(self.thread.take());
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop();
    }
}

fn watch(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    beats: Arc<Beats>,
    doors: Arc<Mutex<HashMap<i32, TcpStream>>>,
    report: impl Fn(Event),
) {
    let mut conns: Vec<(i32, TcpStream)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(conns.iter().map(|(_, c)| c.as_raw_fd()))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN | libc::POLLRDHUP, revents: 0 })
            .collect();
        // SAFETY: valid array of pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if n <= 0 {
            continue;
        }
        if fds[0].revents != 0 {
            while let Ok((mut c, _)) = listener.accept() {
                let mut rank = [0u8; 4];
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                if c.read_exact(&mut rank).is_ok() {
                    let rank = i32::from_le_bytes(rank);
                    keepalive(&c);
                    let _ = c.set_nonblocking(true);
                    beats.note(rank);
                    if let Ok(d) = c.try_clone() {
                        doors.lock().unwrap().insert(rank, d);
                    }
                    conns.push((rank, c));
                    report(Event::Connected(rank));
                }
            }
        }
        let mut closed = Vec::new();
        for (i, f) in fds.iter().enumerate().skip(1) {
            if f.revents != 0 {
                let (rank, c) = &conns[i - 1];
                match drain(c) {
                    Some(got) if got.any => {
                        beats.note(*rank);
                        if got.wake {
                            report(Event::Wake(*rank));
                        }
                    }
                    Some(_) => {}
                    None => closed.push(i - 1),
                }
            }
        }
        for i in closed.into_iter().rev() {
            let (rank, _) = conns.remove(i);
            doors.lock().unwrap().remove(&rank);
            if !stop.load(Ordering::SeqCst) {
                report(Event::Closed(rank));
            }
        }
    }
}

/// What [`drain`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Drained {
    /// Some byte came (a heartbeat or a ring).
    pub any: bool,
    /// A [`WAKE`] byte came.
    pub wake: bool,
}

/// Reads the bytes waiting on a liveness connection (heartbeats, rings): what came, or `None`
/// if the connection is closed (or broken).
pub(crate) fn drain(c: &TcpStream) -> Option<Drained> {
    let mut b = [0u8; 64];
    let mut got = Drained::default();
    loop {
        // SAFETY: valid buffer and socket.
        let n = unsafe { libc::recv(c.as_raw_fd(), b.as_mut_ptr() as *mut libc::c_void, b.len(), libc::MSG_DONTWAIT) };
        if n == 0 {
            return None;
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Some(got),
                io::ErrorKind::Interrupted => continue,
                _ => None,
            };
        }
        got.any = true;
        got.wake |= b[..n as usize].iter().any(|&x| x != BEAT);
    }
}

/// TCP keepalive: a vanished node is noticed within about 20 s.
fn keepalive(c: &TcpStream) {
    let set = |level, opt, v: libc::c_int| {
        // SAFETY: valid socket and option value.
        unsafe {
            libc::setsockopt(
                c.as_raw_fd(),
                level,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 10);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 3);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
}

/// This host's IPv4 addresses, loopback first.
fn local_ipv4() -> Vec<Ipv4Addr> {
    let mut out = vec![Ipv4Addr::LOCALHOST];
    let mut ifa: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    if unsafe { libc::getifaddrs(&mut ifa) } != 0 {
        return out;
    }
    let mut p = ifa;
    while !p.is_null() {
        // SAFETY: p walks the list returned by getifaddrs.
        let a = unsafe { &*p };
        if !a.ifa_addr.is_null() && unsafe { (*a.ifa_addr).sa_family } as libc::c_int == libc::AF_INET {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(a.ifa_addr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        p = a.ifa_next;
    }
    // SAFETY: the list from getifaddrs.
    unsafe { libc::freeifaddrs(ifa) };
    out
}

/// Worker side: connects to rank 0 as `rank` (loopback first when on rank 0's host) and starts
/// the heartbeat rank 0 asks for.
pub(crate) fn connect(address: &str, rank: i32) -> Result<(TcpStream, Heartbeat), String> {
    let mut parts = address.splitn(4, ';');
    let (Some(port), Some(host), Some(ips)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("bad liveness address {:?}", address));
    };
    let beat = match parts.next() {
        Some(ms) => Duration::from_millis(ms.parse().map_err(|_| format!("bad heartbeat in {:?}", address))?),
        None => Duration::from_secs(1),
    };
    let port: u16 = port.parse().map_err(|_| format!("bad liveness port in {:?}", address))?;
    let same_host = host == crate::engine::hostname();
    let mut errors = Vec::new();
    for ip in ips.split(',').filter(|s| !s.is_empty()) {
        let Ok(ip) = ip.parse::<Ipv4Addr>() else { continue };
        if ip.is_loopback() && !same_host {
            continue;
        }
        let addr = SocketAddr::new(IpAddr::V4(ip), port);
        match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
            Ok(mut c) => {
                c.write_all(&rank.to_le_bytes()).map_err(|e| e.to_string())?;
                keepalive(&c);
                let heartbeat = Heartbeat::start(c.try_clone().map_err(|e| e.to_string())?, beat)?;
                return Ok((c, heartbeat));
            }
            Err(e) => errors.push(format!("{}: {}", addr, e)),
        }
    }
    Err(format!("cannot reach rank 0 ({}): {}", host, errors.join("; ")))
}

/// Whether rank 0's end of the liveness connection has closed (rings waiting on it are read).
pub(crate) fn driver_gone(c: &TcpStream) -> bool {
    doze(c, Duration::ZERO)
}

/// Waits up to `timeout` for rank 0 to ring (or close) the liveness connection, and reads
/// the rings: whether rank 0's end has closed. Called by one thread at a time.
pub(crate) fn doze(c: &TcpStream, timeout: Duration) -> bool {
    let mut f = libc::pollfd { fd: c.as_raw_fd(), events: libc::POLLIN | libc::POLLRDHUP, revents: 0 };
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
    // SAFETY: one valid pollfd and timespec; no signal mask change.
    let n = unsafe { libc::ppoll(&mut f, 1, &ts, std::ptr::null()) };
    if n <= 0 {
        return false;
    }
    if f.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
        return true;
    }
    drain(c).is_none()
}

/// A worker's heartbeat: one byte on the liveness connection every interval, from a thread of
/// its own, so a long task never silences it (a stopped or hung process does).
pub struct Heartbeat {
    conn: TcpStream,
}

impl Heartbeat {
    fn start(conn: TcpStream, every: Duration) -> Result<Heartbeat, String> {
        let mut c = conn.try_clone().map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("taps-mpi-heartbeat".into())
            .spawn(move || {
                // Ends when the connection is shut down or broken.
                while c.write_all(&[BEAT]).is_ok() {
                    std::thread::sleep(every);
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Heartbeat { conn })
    }
}

impl Drop for Heartbeat {
    /// Closes the liveness connection for good (every handle of it): rank 0 learns that this
    /// rank is done.
    fn drop(&mut self) {
        let _ = self.conn.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected loopback pair (the accepting side first).
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (l.accept().unwrap().0, c)
    }

    #[test]
    fn a_ring_ends_a_doze_and_a_close_is_seen() {
        let (rank0, worker) = pair();
        // Hang guard only: the doze must end at the ring, long before its timeout.
        let guard = Duration::from_secs(60);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            ring(&rank0);
            std::thread::sleep(Duration::from_millis(50));
            drop(rank0);
        });
        let start = Instant::now();
        assert!(!doze(&worker, guard), "a ring is not a close");
        assert!(start.elapsed() < guard, "the ring ended the doze");
        assert!(!driver_gone(&worker), "the ring was read: nothing is left to see");
        assert!(doze(&worker, guard), "rank 0 closed its end");
        assert!(start.elapsed() < guard);
        assert!(driver_gone(&worker), "and it stays closed");
        t.join().unwrap();
    }

    #[test]
    fn the_watcher_reports_rings_not_heartbeats() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let w = Watcher::start(Duration::from_secs(3600), move |e| {
            let _ = tx.send(e);
        })
        .unwrap();
        let (c, _beat) = connect(&w.address, 7).unwrap();
        let guard = Duration::from_secs(60);
        assert_eq!(rx.recv_timeout(guard), Ok(Event::Connected(7)));
        // The heartbeat thread sent its first beat at connect; another one, then a ring.
        (&c).write_all(&[BEAT]).unwrap();
        ring(&c);
        assert_eq!(rx.recv_timeout(guard), Ok(Event::Wake(7)), "a ring is reported");
        assert!(w.beats.last(7).is_some());
        // Rank 0 rings the worker through the watcher.
        w.ring(7);
        assert!(!doze(&c, guard));
        assert!(rx.try_recv().is_err(), "heartbeats alone report nothing");
        drop((c, _beat));
        assert_eq!(rx.recv_timeout(guard), Ok(Event::Closed(7)));
    }
}
