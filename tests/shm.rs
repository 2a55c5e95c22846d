//! Large payloads through shared memory on the process-pool: they arrive intact, travel as
//! `memfd` segments (the workers map them), and nothing of them is left after a run — a worker
//! killed while it holds one included. One test in this binary alone: it inspects this process's
//! own mappings and descriptors, which other tests running beside it would disturb.

use std::time::Duration;

use bytes::Bytes;
use taps::engine::Engine;
use taps::engine::builtin::Echo;
use taps::executor::process_pool::ProcessPool;
use taps::record::{RecordWriter, read_records};

/// Mappings and descriptors of `pid` that are taps payload segments.
fn segments_of(pid: &str) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", pid)).unwrap();
    let mapped = maps.lines().filter(|l| l.contains("memfd:taps-payload")).count();
    let fds = std::fs::read_dir(format!("/proc/{}/fd", pid))
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("memfd:taps-payload")))
        .count();
    mapped + fds
}

fn payload(n: usize, seed: u32) -> Bytes {
    (0..n as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 24) as u8).collect::<Vec<u8>>().into()
}

#[test]
fn large_payloads_go_through_shared_memory_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pool = ProcessPool::new(1).worker_path(env!("CARGO_BIN_EXE_taps"));
    let watch = pool.watch();
    let e =
        Engine::builder(Box::new(pool)).records(RecordWriter::create(&dir.path().join("tasks.jsonl")).unwrap()).build();

    // Several sizes, chained (a result passed on as the next argument), all intact.
    let mut submitted = 0;
    for (i, n) in [300_000, 3_000_000, 10_000_000].into_iter().enumerate() {
        let p = payload(n, i as u32);
        let f = e.submit::<Echo>((p.clone().into(),));
        let g = e.submit::<Echo>(((&f).into(),));
        submitted += 2;
        assert!(f.result().unwrap() == p && g.result().unwrap() == p, "{} bytes came back intact", n);
    }
    // They went through shared memory: the worker maps segments (kept for reuse).
    let worker = watch.pids()[0];
    assert!(segments_of(&worker.to_string()) > 0, "the worker maps payload segments");
    assert!(segments_of("self") > 0, "so does the driver");

    // A worker killed while it holds a segment (stopped before it could take it).
    // SAFETY: plain syscalls on our own worker process.
    unsafe { libc::kill(worker as i32, libc::SIGSTOP) };
    let lost = e.submit::<Echo>((payload(5_000_000, 7).into(),));
    submitted += 1;
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: as above.
    unsafe { libc::kill(worker as i32, libc::SIGKILL) };
    assert_eq!(lost.result().unwrap_err().kind, "WorkerLost");
    let p = payload(4_000_000, 9);
    let after = e.submit::<Echo>((p.clone().into(),));
    submitted += 1;
    assert!(after.result().unwrap() == p, "the replacement serves");
    drop((lost, after));
    e.shutdown();

    assert_eq!(segments_of("self"), 0, "no segment is mapped or open after the run");
    let recs = read_records(&dir.path().join("tasks.jsonl")).unwrap();
    assert_eq!(recs.len(), submitted, "one record per task");
    assert_eq!(recs.iter().filter(|r| r.success == Some(false)).count(), 1);
}
