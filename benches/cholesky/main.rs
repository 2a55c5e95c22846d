//! `cargo bench --bench cholesky [-- N:B ... --reps R]`: makespan of the tiled cholesky app on
//! thread-pool (and process-pool when compiled in) versus one whole-matrix OpenBLAS `dpotrf`.
//! Defaults: 4000:500 and 8000:1000, 3 repetitions.

mod makespan;

fn main() {
    taps::apps::cholesky::kernels::use_best_blas_kernels();
    let mut cases = Vec::new();
    let mut reps = 3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => {}
            "--reps" => reps = args.next().and_then(|r| r.parse().ok()).expect("--reps needs a number"),
            case => {
                let (n, b) = case.split_once(':').expect("cases are N:B, e.g. 4000:500");
                cases.push((n.parse().expect("N is a number"), b.parse().expect("B is a number")));
            }
        }
    }
    if cases.is_empty() {
        cases = vec![(4000, 500), (8000, 1000)];
    }
    if let Err(e) = makespan::run(&cases, reps) {
        eprintln!("cholesky bench: {:#}", e);
        std::process::exit(1);
    }
}
