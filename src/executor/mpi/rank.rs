//! Ranks 1..N-1: the worker loop over MPI, reusing [`Worker::handle`].
//!
//! The first message from rank 0 is the liveness address; the worker connects (so rank 0 learns
//! at once if this process dies) and then serves protocol frames one at a time. While it waits
//! it spins briefly, then sleeps with a growing pause, and checks that rank 0 is still alive.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::protocol::{Frame, Message, ToWorker};
use crate::worker::{Step, Worker};

use super::liveness;
use super::transport::{Inbox, TAG_LOST, TAG_WATCH, send_frame};

const SPIN: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_millis(1);
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// Serves rank 0 until `Shutdown`; returns the exit code, and whether `MPI_Finalize` must be
/// skipped (a rank was lost, or rank 0 is gone: finalize would wait for it forever).
pub fn serve(rank: i32) -> (i32, bool) {
    super::transport::precise_sleeps();
    let mut lost = false;
    let code = serve_loop(rank, &mut lost);
    (code, lost)
}

fn serve_loop(rank: i32, lost: &mut bool) -> i32 {
    let mut inbox = Inbox::default();
    let mut worker = Worker::new();
    let mut watch: Option<TcpStream> = None;
    loop {
        let (tag, frame) = match wait(&mut inbox, watch.as_ref()) {
            Ok(Some(x)) => x,
            Ok(None) => {
                eprintln!("taps-worker rank {}: rank 0 (the driver) is gone; exiting", rank);
                *lost = true;
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
        if tag == TAG_WATCH {
            let address = String::from_utf8_lossy(&frame.header).into_owned();
            match liveness::connect(&address, rank) {
                Ok(c) => watch = Some(c),
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
        let (reply, exit) = match worker.handle(msg) {
            Step::Continue(r) => (r, None),
            Step::Exit(r, code) => (r, Some(code)),
        };
        if let Some(r) = reply
            && let Err(e) = send(r.encode(), watch.as_ref())
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

/// Waits for the next frame from rank 0; `None` if rank 0 is gone.
fn wait(inbox: &mut Inbox, watch: Option<&TcpStream>) -> Result<Option<(i32, Frame)>, String> {
    let start = Instant::now();
    let mut checked = start;
    loop {
        inbox.poll(Some(0))?;
        if let Some((_, tag, f)) = inbox.take_frame()? {
            return Ok(Some((tag, f)));
        }
        if checked.elapsed() >= CHECK_EVERY {
            checked = Instant::now();
            if watch.is_some_and(liveness::driver_gone) {
                return Ok(None);
            }
        }
        let idle = start.elapsed();
        // A message under way moves only while both sides poll: never sleep through it.
        if idle < SPIN || inbox.busy() {
            // No sched_yield of our own: MPI's progress engine yields when the ranks
            // oversubscribe the cores (mpi_yield_when_idle), and otherwise this rank has a core.
            std::hint::spin_loop();
            continue;
        }
        std::thread::sleep((idle / 8).min(MAX_PAUSE));
    }
}

/// Sends a frame to rank 0 and waits until it has left (rank 0 always receives).
fn send(frame: Frame, watch: Option<&TcpStream>) -> Result<(), String> {
    let mut s = send_frame(0, frame)?;
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
