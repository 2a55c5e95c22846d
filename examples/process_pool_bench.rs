//! Process-pool micro-benchmarks (not tests): dispatch overhead with one task in flight,
//! no-op throughput with 2 workers, and a 10 MB argument + 10 MB result round trip inline and
//! through the `file` transformer. Compare with `--executor thread-pool`.
//!
//! ```text
//! cargo build --release --bins && cargo run --release --example process_pool_bench [-- --executor thread-pool]
//! # env: BENCH_ONLY=seq|throughput|big, BENCH_SEQ=N, BENCH_ROUNDS=N, BENCH_IN_FLIGHT=2,64, BENCH_COLD=1 (no page-cache warm-up)
//! ```
//!
//! Overhead per task is computed from the task records as the Python suite does:
//! (received_time − submit_time) − (task_end_time − task_start_time).

use std::time::Instant;

use bytes::Bytes;
use taps::bench::{overheads, quantiles};
use taps::data::{DataLayer, DataSpec};
use taps::engine::builtin::{Echo, Warmup};
use taps::engine::{Completions, Engine, Executor};
use taps::executor::process_pool::ProcessPool;
use taps::executor::thread_pool::ThreadPool;
use taps::record::{RecordWriter, TaskRecord, read_records};

fn executor(kind: &str, n: usize) -> Box<dyn Executor> {
    match kind {
        "thread-pool" => Box::new(ThreadPool::new(n)),
        _ => Box::new(ProcessPool::new(n)),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    quantiles(&mut v).median
}

/// One task in flight: submit, wait, submit the next.
fn sequential(kind: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    // 1. One task in flight: submit, wait, submit the next.
    let n: usize = std::env::var("BENCH_SEQ").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let path = dir.join("seq.jsonl");
    let e = Engine::builder(executor(kind, 2)).records(RecordWriter::create(&path)?).build();
    for _ in 0..1000 {
        e.submit::<Warmup>(()).result()?;
    }
    let t = Instant::now();
    for _ in 0..n {
        e.submit::<Warmup>(()).result()?;
    }
    let rtt = t.elapsed().as_secs_f64() / n as f64;
    e.shutdown();
    let recs = read_records(&path)?;
    let ov = overheads(&recs[1000..]);
    let leg = |f: &dyn Fn(&TaskRecord) -> f64| median(recs[1000..].iter().map(f).collect()) * 1e6;
    println!(
        "  legs (median us): submit->worker start {:.1}, in worker {:.1}, worker end->received {:.1}",
        leg(&|r| r.execution.as_ref().unwrap().execution_start_time - r.submit_time),
        leg(&|r| r.execution.as_ref().unwrap().execution_end_time - r.execution.as_ref().unwrap().execution_start_time),
        leg(&|r| r.received_time.unwrap() - r.execution.as_ref().unwrap().execution_end_time),
    );
    println!(
        "one in flight ({} no-op tasks): overhead median {:.1} us, p95 {:.1} us; app round trip mean {:.1} us",
        n,
        median(ov.clone()) * 1e6,
        quantiles(&mut ov.clone()).p95 * 1e6,
        rtt * 1e6
    );

    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let kind =
        args.iter().position(|a| a == "--executor").map(|i| args[i + 1].clone()).unwrap_or("process-pool".into());
    let tmp = tempfile::tempdir()?;
    println!("executor: {}", kind);
    // BENCH_ONLY=seq|throughput|big runs one part.
    let only = |part: &str| std::env::var("BENCH_ONLY").map(|v| v == part).unwrap_or(true);
    if only("seq") {
        sequential(&kind, tmp.path())?;
    }

    // 2. Throughput with 2 workers: (a) at most 2 in flight (bag-max-running 2), (b) all at once.
    let widths: Vec<usize> = match std::env::var("BENCH_IN_FLIGHT") {
        Ok(v) => v.split(',').filter_map(|w| w.parse().ok()).collect(),
        Err(_) => vec![2, 64, usize::MAX],
    };
    for in_flight in widths.into_iter().filter(|_| only("throughput")) {
        let n = 100_000;
        let e = Engine::builder(executor(&kind, 2)).build();
        let t = Instant::now();
        let mut running = Completions::new();
        let mut submitted = 0;
        while submitted < n.min(in_flight) {
            running.push(e.submit::<Warmup>(()));
            submitted += 1;
        }
        while let Some(f) = running.next() {
            f.result()?;
            if submitted < n {
                running.push(e.submit::<Warmup>(()));
                submitted += 1;
            }
        }
        let rate = n as f64 / t.elapsed().as_secs_f64();
        e.shutdown();
        let label = if in_flight == usize::MAX { "all".to_string() } else { in_flight.to_string() };
        println!("throughput, 2 workers, {} in flight: {:.0} tasks/s", label, rate);
    }

    // 3. 10 MB argument + 10 MB result.
    let mb10 = Bytes::from((0..10_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect::<Vec<u8>>());
    if only("big") && std::env::var_os("BENCH_COLD").is_none() {
        // On a fresh VM the first touch of a guest page is slow (~0.5 GB/s here); writing and
        // deleting 1 GB first lets the page cache reuse warm pages, as in a long benchmark.
        let warm = tmp.path().join("warm");
        std::fs::create_dir_all(&warm)?;
        for i in 0..100 {
            std::fs::write(warm.join(i.to_string()), &mb10)?;
        }
        std::fs::remove_dir_all(&warm)?;
    }
    for transformer in ["none", "file"].into_iter().filter(|_| only("big")) {
        let spec = DataSpec {
            filter: None,
            transformer: (transformer == "file").then(|| {
                ("file".to_string(), format!("file_dir = {:?}", tmp.path().join("data").display().to_string()))
            }),
            run_dir: None,
        };
        let data = DataLayer::from_spec(spec).map_err(anyhow::Error::msg)?;
        let path = tmp.path().join(format!("big-{}.jsonl", transformer));
        let e = Engine::builder(executor(&kind, 1)).data(data).records(RecordWriter::create(&path)?).build();
        let mut times = Vec::new();
        let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(25);
        for i in 0..rounds + 5 {
            let t = Instant::now();
            let out = e.submit::<Echo>((mb10.clone().into(),)).result()?;
            let dt = t.elapsed().as_secs_f64();
            assert_eq!(out.len(), mb10.len());
            if i >= 5 {
                times.push(dt);
            }
        }
        e.shutdown();
        let m = median(times);
        let recs = read_records(&path)?;
        let r = &recs[recs.len() - 1];
        let big = &recs[5..];
        let med = |f: &dyn Fn(&TaskRecord) -> f64| median(big.iter().map(f).collect()) * 1e3;
        let x = |r: &TaskRecord| r.execution.clone().unwrap();
        println!(
            "  legs (median ms): submit->start {:.2}, resolve args {:.2}, task {:.2}, transform result {:.2}, end->received {:.2}",
            med(&|r| x(r).execution_start_time - r.submit_time),
            med(&|r| x(r).input_transform_end_time - x(r).input_transform_start_time),
            med(&|r| x(r).task_end_time - x(r).task_start_time),
            med(&|r| x(r).result_transform_end_time - x(r).result_transform_start_time),
            med(&|r| r.received_time.unwrap() - x(r).execution_end_time),
        );
        println!(
            "10 MB in + 10 MB out, transformer {}: median round trip {:.2} ms = {:.2} GB/s effective (moved {} B inline, {} B by reference)",
            transformer,
            m * 1e3,
            20e6 / m / 1e9,
            r.bytes_inline,
            r.bytes_by_reference
        );
    }
    Ok(())
}
