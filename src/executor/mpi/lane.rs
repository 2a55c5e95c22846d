//! Same-node lanes: between rank 0 and a worker rank on its node, frames travel through a pair
//! of shared-memory rings (the process-pool's [`Doorbell`] page, here a named file of the run in
//! the shared-memory directory) instead of MPI messages. Polling a ring is a few loads, with no
//! system call and no pass through MPI's progress engine, which yields the CPU on every empty
//! poll when the ranks oversubscribe the cores.
//!
//! Every frame between the two goes through the lane once it is set up, in order: a frame that
//! fits ([`Doorbell::fits`]) is copied into the ring; a larger one (or one carrying shared-memory
//! segments, or a text message such as [`TAG_LOST`](super::transport::TAG_LOST)) goes as MPI
//! messages and is *announced* by an entry in the ring, so the reader takes it from MPI exactly
//! when it comes next, and polls MPI only while an announced message is due. A frame that finds
//! the ring full waits in the lane's backlog, and everything after it waits behind it.
//!
//! Set-up rides on the run's shared-memory handshake ([`TAG_SHM`](super::transport::TAG_SHM)):
//! rank 0 creates one page per rank (`{prefix}-d-lane-{rank}`) and sends its hostname with the
//! directory and prefix; a rank on the same host that sees the directory maps its page and
//! answers `2`. Rank 0 then removes the name (the mapping stays) and uses the lane for that rank
//! from then on: frames from the rank come only through it (the `2` precedes them on MPI), and
//! frames to it follow the MPI messages of the start (liveness address, `Hello`), which the rank
//! reads from MPI until it has taken `Hello`. A page whose rank never answered is removed with
//! the run's other names at the end.

use std::collections::VecDeque;
use std::os::raw::c_int;

use bytes::Bytes;

use crate::protocol::{Doorbell, Entry, Frame, Side};

use super::transport::{Inbox, Sending, TAG_FRAME, send_frame_shared, send_text};

/// The name of rank `rank`'s lane page in the run of `prefix` (among rank 0's names).
pub(crate) fn page_name(prefix: &str, rank: i32) -> String {
    format!("{}-d-lane-{}", prefix, rank)
}

/// One side of a lane.
pub(crate) struct Lane {
    bell: Doorbell,
    /// The ring this side writes (the other is read).
    out: Side,
    /// MPI messages announced in the ring this side reads, not yet taken.
    due: u32,
    /// Messages waiting for room in the ring (everything to the peer waits behind them).
    backlog: VecDeque<(c_int, Frame)>,
    /// Frames taken from the ring / as announced MPI messages, so far.
    pub taken: [u64; 2],
    /// Messages to the peer that waited in the backlog, so far.
    pub waited: u64,
}

/// What [`Lane::put`] did with a message.
enum Put {
    Ring,
    Mpi(Sending),
    Full(c_int, Frame),
}

impl Lane {
    /// Rank 0's side of the lane to a rank.
    pub(crate) fn driver(bell: Doorbell) -> Lane {
        Lane { bell, out: Side::ToWorker, due: 0, backlog: VecDeque::new(), taken: [0; 2], waited: 0 }
    }

    /// A worker rank's side of its lane to rank 0.
    pub(crate) fn worker(bell: Doorbell) -> Lane {
        Lane { bell, out: Side::ToDriver, due: 0, backlog: VecDeque::new(), taken: [0; 2], waited: 0 }
    }

    fn inward(&self) -> Side {
        match self.out {
            Side::ToWorker => Side::ToDriver,
            Side::ToDriver => Side::ToWorker,
        }
    }

    /// Counts an entry for the reader, waking it if it sleeps on the page.
    fn ring(&self) {
        match self.out {
            Side::ToWorker => self.bell.ring_worker(),
            Side::ToDriver => self.bell.ring_driver(),
        }
    }

    /// Puts a message (`tag` [`TAG_FRAME`]: a frame, else a text message whose text is the
    /// header) to `dest`, if the ring has room.
    fn put(&mut self, dest: i32, tag: c_int, frame: Frame, shares: bool) -> Result<Put, String> {
        if tag == TAG_FRAME && Doorbell::fits(&frame) {
            if !self.bell.put_frame(self.out, &frame) {
                return Ok(Put::Full(tag, frame));
            }
            self.ring();
            return Ok(Put::Ring);
        }
        // The announcement goes first: the reader then polls MPI until the message is there.
        if !self.bell.put_on_socket(self.out, true) {
            return Ok(Put::Full(tag, frame));
        }
        let sending = if tag == TAG_FRAME {
            send_frame_shared(dest, frame, shares)?
        } else {
            send_text(dest, tag, &String::from_utf8_lossy(&frame.header))?
        };
        self.ring();
        Ok(Put::Mpi(sending))
    }

    /// Sends a message to `dest` through the lane (see [`put`](Self::put)), or keeps it for
    /// [`flush`](Self::flush) if the ring is full or others wait; the MPI send it started, if any.
    pub(crate) fn send(
        &mut self,
        dest: i32,
        tag: c_int,
        frame: Frame,
        shares: bool,
    ) -> Result<Option<Sending>, String> {
        if self.backlog.is_empty() {
            match self.put(dest, tag, frame, shares)? {
                Put::Ring => return Ok(None),
                Put::Mpi(s) => return Ok(Some(s)),
                Put::Full(tag, frame) => self.backlog.push_back((tag, frame)),
            }
        } else {
            self.backlog.push_back((tag, frame));
        }
        self.waited += 1;
        Ok(None)
    }

    /// Sends what waits in the backlog while the ring has room; the MPI sends it started.
    pub(crate) fn flush(&mut self, dest: i32, shares: bool) -> Result<Vec<Sending>, String> {
        let mut started = Vec::new();
        while let Some((tag, frame)) = self.backlog.pop_front() {
            match self.put(dest, tag, frame, shares)? {
                Put::Ring => {}
                Put::Mpi(s) => started.push(s),
                Put::Full(tag, frame) => {
                    self.backlog.push_front((tag, frame));
                    break;
                }
            }
        }
        Ok(started)
    }

    /// Sends one message, waiting for room (a worker rank's way: it has one answer at a time,
    /// and rank 0 takes them as long as it lives); `gone` is asked now and then whether the
    /// reader is gone, which ends the wait with an error.
    pub(crate) fn send_waiting(
        &mut self,
        dest: i32,
        frame: Frame,
        shares: bool,
        mut gone: impl FnMut() -> bool,
    ) -> Result<Option<Sending>, String> {
        let (mut tag, mut frame) = (TAG_FRAME, frame);
        let mut tries = 0u32;
        loop {
            match self.put(dest, tag, frame, shares)? {
                Put::Ring => return Ok(None),
                Put::Mpi(s) => return Ok(Some(s)),
                Put::Full(t, f) => (tag, frame) = (t, f),
            }
            tries = tries.wrapping_add(1);
            if tries < 1000 {
                std::thread::yield_now();
            } else {
                if tries.is_multiple_of(500) && gone() {
                    return Err("rank 0 (the driver) is gone; exiting".into());
                }
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
    }

    /// The next message from `source` (the peer): from the ring, or the announced MPI message
    /// once it has arrived whole (the caller polls MPI while [`expecting`](Self::expecting)).
    pub(crate) fn next(&mut self, source: i32, inbox: &mut Inbox) -> Result<Option<(c_int, Frame)>, String> {
        loop {
            if self.due > 0 {
                let Some(m) = inbox.take_from(source)? else { return Ok(None) };
                self.due -= 1;
                self.taken[1] += 1;
                return Ok(Some(m));
            }
            match self.bell.next(self.inward(), true).map_err(|e| e.to_string())? {
                Entry::Empty => return Ok(None),
                Entry::Inline(v) => {
                    self.taken[0] += 1;
                    let frame = Frame::from_bytes(Bytes::from(v)).map_err(|e| e.to_string())?;
                    return Ok(Some((TAG_FRAME, frame)));
                }
                Entry::OnSocket { .. } => self.due += 1,
            }
        }
    }

    /// Whether an announced MPI message is due from the peer (poll MPI until it is there).
    pub(crate) fn expecting(&self) -> bool {
        self.due > 0
    }

    /// Whether messages wait for room in the ring.
    pub(crate) fn backlogged(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// The count of entries put in the ring this side reads (for [`sleep`](Self::sleep)).
    pub(crate) fn rung(&self) -> u64 {
        self.bell.rung(self.inward())
    }

    /// A worker rank sleeps until rank 0 puts something past `seen`, or `timeout` passes.
    pub(crate) fn sleep(&self, seen: u64, timeout: std::time::Duration) {
        debug_assert_eq!(self.out, Side::ToDriver);
        self.bell.sleep_worker(seen, timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Message, ToWorker, WirePayload};

    fn run_frame(seq: u64, bytes: usize) -> Frame {
        let args = vec![WirePayload::Bytes(Bytes::from(vec![seq as u8; bytes]))];
        ToWorker::Run { seq, id: Default::default(), task: "echo".into(), args }.encode()
    }

    #[test]
    fn frames_that_find_the_ring_full_wait_in_order_behind_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(page_name("taps-test", 1));
        let mut driver = Lane::driver(Doorbell::create_file(&path).unwrap());
        let mut worker = Lane::worker(Doorbell::open_file(&path).unwrap());
        assert!(Doorbell::create_file(&path).is_err(), "a page is never made over an existing file");
        let rung = worker.rung();
        // 40 frames of ~3 KB: more than the 64 KiB ring holds.
        for seq in 0..40 {
            assert!(driver.send(1, TAG_FRAME, run_frame(seq, 3000), false).unwrap().is_none());
        }
        assert!(driver.backlogged(), "the ring filled up");
        assert!(driver.waited > 0 && driver.waited < 40, "{}", driver.waited);
        let mut inbox = Inbox::default();
        let mut got = Vec::new();
        while got.len() < 40 {
            assert!(driver.flush(1, false).unwrap().is_empty());
            while let Some((tag, f)) = worker.next(0, &mut inbox).unwrap() {
                assert_eq!(tag, TAG_FRAME);
                match ToWorker::decode(f).unwrap() {
                    ToWorker::Run { seq, args, .. } => {
                        assert_eq!(args, vec![WirePayload::Bytes(Bytes::from(vec![seq as u8; 3000]))]);
                        got.push(seq);
                    }
                    m => panic!("unexpected {:?}", m),
                }
            }
        }
        assert_eq!(got, (0..40).collect::<Vec<_>>());
        assert!(!driver.backlogged());
        assert_eq!(worker.rung() - rung, 40, "one ring per frame");
        assert_eq!(worker.taken, [40, 0]);
        // And back: the worker's answers reach the driver's side.
        let done = crate::protocol::FromWorker::Ready { pid: 7, hostname: "h".into() }.encode();
        assert!(worker.send_waiting(0, done, false, || false).unwrap().is_none());
        let (_, f) = driver.next(1, &mut inbox).unwrap().unwrap();
        assert_eq!(
            crate::protocol::FromWorker::decode(f).unwrap(),
            crate::protocol::FromWorker::Ready { pid: 7, hostname: "h".into() }
        );
    }
}
