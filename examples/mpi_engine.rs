//! The mpi executor used as a library, under `mpirun`: rank 0 drives an `Engine`, the other
//! ranks serve tasks. It runs echo round trips (small and 1 MB), a panicking task, and — with
//! `abort` as the second argument — a task that kills its rank, then checks what came back and
//! writes the records to `OUT/tasks.jsonl`.
//!
//! ```text
//! cargo build --release --features mpi --examples
//! OMPI_MCA_orte_enable_recovery=1 mpirun --oversubscribe -np 3 target/release/examples/mpi_engine OUT [abort]
//! ```
//! Prints `mpi_engine: ok` and exits 0 when every check passed.

use bytes::Bytes;
use taps::engine::Engine;
use taps::engine::builtin::{Abort, Echo, Panic, Sleep};
use taps::executor::mpi::Session;
use taps::record::RecordWriter;

fn main() {
    let session = match Session::init() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mpi_engine: {}", e);
            std::process::exit(2);
        }
    };
    if session.rank() > 0 {
        let code = session.serve();
        drop(session);
        std::process::exit(code);
    }
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(args.get(1).expect("usage: mpi_engine OUT [abort]"));
    let abort = args.get(2).is_some_and(|a| a == "abort");
    std::fs::create_dir_all(&out).unwrap();
    let records = RecordWriter::create(&out.join("tasks.jsonl")).unwrap();
    let engine = Engine::builder(Box::new(session.executor(2))).records(records).build();

    let mut failures = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            eprintln!("mpi_engine: FAILED: {}", what);
            failures.push(what);
        }
    };

    // Round trips, small and large (1 MB goes as head + segment messages).
    let small: Vec<_> =
        (0..50u32).map(|i| engine.submit::<Echo>((Bytes::from(i.to_le_bytes().to_vec()).into(),))).collect();
    let big = Bytes::from((0..1_000_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let b = engine.submit::<Echo>((big.clone().into(),));
    let chained = engine.submit::<Echo>(((&b).into(),));
    for (i, f) in small.iter().enumerate() {
        check(f.result().ok() == Some(Bytes::from((i as u32).to_le_bytes().to_vec())), format!("echo {}", i));
    }
    check(chained.result().ok() == Some(big), "1 MB echo, chained".into());

    // A panic is recorded; the rank goes on.
    let p = engine.submit::<Panic>(("boom on a rank".to_string().into(),));
    let e = p.result().unwrap_err();
    check(e.kind == "TaskPanic" && e.message == "boom on a rank", format!("panic recorded: {:?}", e));
    let after: Vec<_> = (0..10).map(|_| engine.submit::<Sleep>((0.0.into(),))).collect();
    check(after.iter().all(|f| f.result().is_ok()), "tasks after the panic".into());
    check(session.lost_ranks().is_empty(), "no rank lost by a panic".into());

    if abort {
        // Kills whichever rank runs it; the tasks behind it go to the other rank.
        let a = engine.submit::<Abort>(());
        let rest: Vec<_> = (0..20).map(|_| engine.submit::<Sleep>((0.001.into(),))).collect();
        let e = a.result().unwrap_err();
        check(
            e.kind == "WorkerLost"
                && e.message.starts_with("MPI rank ")
                && e.message.ends_with(" died while running this task"),
            format!("abort: {:?}", e),
        );
        check(rest.iter().all(|f| f.result().is_ok()), "tasks after the abort ran on the other rank".into());
        let lost = session.lost_ranks();
        check(lost.len() == 1 && e.message.starts_with(&lost[0]), format!("lost ranks: {:?}", lost));
    }
    let summary = engine.shutdown();
    println!(
        "mpi_engine: {} records, {} failed, lost ranks: {:?}",
        summary.records,
        summary.failed,
        session.lost_ranks()
    );
    if failures.is_empty() {
        println!("mpi_engine: ok");
    }
    drop(engine);
    drop(session);
    std::process::exit(if failures.is_empty() { 0 } else { 1 });
}
