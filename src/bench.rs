//! `taps bench`: dispatch overhead and throughput, computed from `tasks.jsonl`.

/// `taps bench` arguments.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

/// Runs the benchmark; returns the exit code.
pub fn main(_: BenchArgs) -> i32 {
    0
}
