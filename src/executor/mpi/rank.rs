//! Ranks 1..N-1: the worker loop over MPI, reusing [`Worker::handle`].
//!
//! The first message from rank 0 is the liveness address; the worker connects (so rank 0 learns
//! at once if this process dies) and sends heartbeats on it, then serves protocol frames one at
//! a time. While it waits it spins briefly, then dozes with a growing pause on the liveness
//! connection (rank 0 rings it when it sends work to a rank that has waited a while: see
//! [`liveness`]), and checks that rank 0 is still alive. A rank on rank 0's node takes its frames
//! from its [lane](super::lane) instead (polling it, yielding between polls after the first
//! microseconds, then sleeping on the lane's page, which rank 0's next frame wakes). After a
//! task that ran longer than rank 0 spins, it rings rank 0 once its answer is sent. On
//! `Shutdown` it closes the liveness connection before anything else: that is how rank 0 knows
//! the rank has been told.
//!
//! Signals: SIGINT, SIGTERM and SIGHUP reach a worker rank when the whole job is being stopped
//! (mpirun's SIGTERM after a Ctrl-C, srun forwarding one); rank 0 then records every task and
//! ends the job, so a worker rank dies of the signal only once rank 0 is gone, or
//! [`SIGNAL_GRACE`] later (a signal to this rank alone thus still makes it a lost rank). SIGUSR1
//! is how `taps run` tells rank 0 through mpirun to interrupt the run; worker ranks ignore it.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::protocol::{Frame, Message, ToWorker};
use crate::worker::{Step, Worker};

use super::lane::{Lane, page_name};
use super::liveness;
use super::transport::{Inbox, TAG_LOST, TAG_SHM, TAG_WATCH, send_frame_shared, send_text};

const SPIN: Duration = Duration::from_millis(1);
/// A task that ran at least this long finds rank 0 dozing: its answer rings rank 0 (rank 0 spins
/// as long as [`SPIN`] after the last thing that happened; a little less, since its clock
/// started when it sent the task).
const RING_AFTER: Duration = Duration::from_micros(800);
const MAX_PAUSE: Duration = Duration::from_millis(1);
/// Polls of a lane are separated by spin-loop hints only this long, then by yields.
const LANE_PURE_SPIN: Duration = Duration::from_micros(2);
const CHECK_EVERY: Duration = Duration::from_millis(50);
/// After rank 0's liveness connection closes, how long to keep taking messages already on
/// their way (a `Shutdown`) before concluding that rank 0 died.
const DRAIN: Duration = Duration::from_secs(1);
/// How long a worker rank outlives a SIGINT, SIGTERM or SIGHUP (rank 0 ends the job first when
/// the whole job is being stopped).
pub(crate) const SIGNAL_GRACE: Duration = Duration::from_secs(3);

/// This rank's liveness connection, for the signal thread.
static WATCH: std::sync::Mutex<Option<TcpStream>> = std::sync::Mutex::new(None);

/// Defers SIGINT, SIGTERM and SIGHUP until rank 0 is gone or [`SIGNAL_GRACE`] has passed, and
/// ignores SIGUSR1 (once per process).
fn defer_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1]) else {
            return;
        };
        let _ = std::thread::Builder::new().name("taps-mpi-signals".into()).spawn(move || {
            for sig in signals.forever() {
                if sig == SIGUSR1 {
                    continue;
                }
                let until = Instant::now() + SIGNAL_GRACE;
                while Instant::now() < until && !WATCH.lock().unwrap().as_ref().is_some_and(liveness::driver_gone) {
                    std::thread::sleep(CHECK_EVERY);
                }
                crate::shm::leave(WATCH.lock().unwrap().as_ref().is_some_and(liveness::driver_gone));
                let _ = signal_hook::low_level::emulate_default_handler(sig);
            }
        });
    });
}

/// Serves rank 0 until `Shutdown`; returns the exit code, and whether `MPI_Finalize` must be
/// skipped (a rank was lost, or rank 0 is gone: finalize would wait for it forever).
pub fn serve(rank: i32) -> (i32, bool) {
    defer_signals();
    super::transport::precise_sleeps();
    let mut lost = false;
    let mut gone = false;
    let code = serve_loop(rank, &mut lost, &mut gone);
    // Segments this rank made (and, if rank 0 died, every one of the run: nobody else will).
    crate::shm::leave(gone);
    (code, lost)
}

fn serve_loop(rank: i32, lost: &mut bool, gone: &mut bool) -> i32 {
    let mut inbox = Inbox::default();
    let mut worker = Worker::new();
    // Dropped (the connection closed) when this function returns.
    let mut watch: Option<(TcpStream, liveness::Heartbeat)> = None;
    // Whether this rank sees rank 0's shared-memory directory (results then go by name).
    let mut shares = false;
    // Its lane to rank 0, if it runs on rank 0's node (see `lane`): answers go through it from
    // the handshake on; rank 0's frames come through it once `Hello` is taken (those of the
    // start were sent as MPI messages before rank 0 knew of the lane).
    let mut lane: Option<Lane> = None;
    let mut lane_in = false;
    loop {
        let conn = watch.as_ref().map(|(c, _)| c);
        let (tag, frame) = match wait(&mut inbox, conn, lane.as_mut().filter(|_| lane_in)) {
            Ok(Some(x)) => x,
            Ok(None) => {
                eprintln!("taps-worker rank {}: rank 0 (the driver) is gone; exiting", rank);
                *lost = true;
                *gone = true;
                return 1;
            }
            Err(e) => {
                eprintln!("taps-worker rank {}: {}", rank, e);
                *lost = true;
                return 1;
            }
        };
        if tag == TAG_LOST {
            *lost = true;
            continue;
        }
        if tag == TAG_SHM {
            let text = String::from_utf8_lossy(&frame.header).into_owned();
            let mut parts = text.splitn(3, '\n');
            let (dir, prefix, host) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
            shares = crate::shm::Run::join(std::path::Path::new(dir), prefix, rank);
            // Same directory and same host: the same memory (a directory shared over a network
            // file system is not).
            if shares && host == Some(crate::engine::hostname()) {
                let page = std::path::Path::new(dir).join(page_name(prefix, rank));
                lane = crate::protocol::Doorbell::open_file(&page).ok().map(Lane::worker);
            }
            let answer = send_text(
                0,
                TAG_SHM,
                if lane.is_some() {
                    "2"
                } else if shares {
                    "1"
                } else {
                    "0"
                },
            );
            if let Err(e) = answer.and_then(|s| wait_sent(s, conn)) {
                eprintln!("taps-worker rank {}: {}", rank, e);
                *lost = true;
                return 1;
            }
            continue;
        }
        if tag == TAG_WATCH {
            let address = String::from_utf8_lossy(&frame.header).into_owned();
            match liveness::connect(&address, rank) {
                Ok(c) => {
                    *WATCH.lock().unwrap() = c.0.try_clone().ok();
                    watch = Some(c);
                }
                Err(e) => eprintln!(
                    "taps-worker rank {}: no liveness connection ({}); if this rank dies, rank 0 will not notice",
                    rank, e
                ),
            }
            continue;
        }
        let msg = match ToWorker::decode(frame) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("taps-worker rank {}: {}", rank, e);
                return 2;
            }
        };
        lane_in |= matches!(msg, ToWorker::Hello { .. });
        let took = Instant::now();
        let (reply, exit) = match worker.handle(msg) {
            Step::Continue(r) => (r, None),
            Step::Exit(r, code) => (r, Some(code)),
        };
        let ring = took.elapsed() >= RING_AFTER;
        if let Some(r) = reply
            && let Err(e) = send(r.encode(), conn, shares, ring, lane.as_mut())
        {
            eprintln!("taps-worker rank {}: {}", rank, e);
            *lost = true;
            return 1;
        }
        if let Some(code) = exit {
            return code;
        }
    }
}

/// Waits for the next frame from rank 0; `None` if rank 0 is gone (its liveness connection
/// closed and nothing more came within [`DRAIN`]).
fn wait(
    inbox: &mut Inbox,
    watch: Option<&TcpStream>,
    mut lane: Option<&mut Lane>,
) -> Result<Option<(i32, Frame)>, String> {
    let start = Instant::now();
    let mut checked = start;
    let mut gone: Option<Instant> = None;
    let mut polls = 0u32;
    let mut yielding = false;
    loop {
        // Read before looking: a frame put after the look rings past it, so the sleep ends.
        let seen = lane.as_ref().map(|l| l.rung());
        match lane.as_deref_mut() {
            Some(l) => {
                // MPI only while an announced message is due.
                if l.expecting() || inbox.busy() {
                    inbox.poll(Some(0))?;
                }
                if let Some(m) = l.next(0, inbox)? {
                    return Ok(Some(m));
                }
            }
            None => {
                inbox.poll(Some(0))?;
                if let Some((_, tag, f)) = inbox.take_frame()? {
                    return Ok(Some((tag, f)));
                }
            }
        }
        // The clock is read every eighth poll (on a VM a read costs more than the poll).
        polls = polls.wrapping_add(1);
        if !polls.is_multiple_of(8) {
            pause_poll(yielding);
            continue;
        }
        if let Some(at) = gone {
            if at.elapsed() >= DRAIN {
                return Ok(None);
            }
        } else if checked.elapsed() >= CHECK_EVERY {
            checked = Instant::now();
            if watch.is_some_and(liveness::driver_gone) {
                gone = Some(Instant::now());
            }
        }
        let idle = start.elapsed();
        // A message under way moves only while both sides poll: never sleep through it.
        if idle < SPIN || inbox.busy() || lane.as_ref().is_some_and(|l| l.expecting()) {
            // Polling MPI needs no sched_yield of ours: MPI's progress engine yields when the
            // ranks oversubscribe the cores (mpi_yield_when_idle). Polling a lane, which has no
            // such thing, yields between polls after the first microseconds, as the
            // process-pool's workers do (`spin::until`): on a busy node rank 0 gets the core.
            yielding = lane.is_some() && idle >= LANE_PURE_SPIN;
            pause_poll(yielding);
            continue;
        }
        yielding = false;
        let pause = (idle / 8).min(MAX_PAUSE);
        if let (Some(l), Some(seen)) = (lane.as_ref(), seen) {
            // Rank 0's ring wakes it as soon as it puts a frame.
            l.sleep(seen, pause);
            continue;
        }
        match watch {
            // Rank 0 rings after sending work: the doze ends as soon as it does.
            Some(c) if gone.is_none() => {
                if liveness::doze(c, pause) {
                    gone = Some(Instant::now());
                }
            }
            _ => std::thread::sleep(pause),
        }
    }
}

/// Between two polls of a wait: a spin-loop hint, or the CPU given up.
fn pause_poll(yielding: bool) {
    if yielding {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// Sends a frame to rank 0 (with `shares`, its shared-memory segments by name) and waits until
/// it has left (rank 0 always receives); with `ring`, rings rank 0 once the send is under way.
fn send(
    frame: Frame,
    watch: Option<&TcpStream>,
    shares: bool,
    ring: bool,
    lane: Option<&mut Lane>,
) -> Result<(), String> {
    let sending = match lane {
        Some(l) => l.send_waiting(0, frame, shares, || watch.is_some_and(liveness::driver_gone))?,
        None => Some(send_frame_shared(0, frame, shares)?),
    };
    if ring && let Some(c) = watch {
        liveness::ring(c);
    }
    match sending {
        Some(s) => wait_sent(s, watch),
        None => Ok(()),
    }
}

/// Waits until a send to rank 0 has left.
fn wait_sent(mut s: super::transport::Sending, watch: Option<&TcpStream>) -> Result<(), String> {
    let mut checked = Instant::now();
    while !s.test()? {
        // Rank 0 always receives, so this is short: spin, without sleeping through the transfer.
        std::hint::spin_loop();
        if checked.elapsed() >= CHECK_EVERY {
            checked = Instant::now();
            if watch.is_some_and(liveness::driver_gone) {
                std::mem::forget(s);
                return Err("rank 0 (the driver) is gone; exiting".into());
            }
        }
    }
    Ok(())
}
