//! Makespan benchmark: the tiled factorization through the engine on each local executor versus
//! one whole-matrix `dpotrf` of the same OpenBLAS on every core (the practical limit), and a
//! whole-matrix `dgemm` of the same n³/3 flops (the machine's BLAS speed).
//! Used by `cargo bench --bench cholesky` (kept out of the library, which does not need it).

use std::time::{Duration, Instant};

use ndarray::Array2;

use ndarray::s;
use taps::apps::cholesky::{Schedule, factor, factor_with, kernels, task_count};
use taps::engine::Engine;
use taps::executor::available_cores;

/// Executors measured when they are compiled in.
pub const EXECUTORS: &[&str] = &["thread-pool", "process-pool"];

/// One measured configuration.
#[derive(Clone, Debug)]
pub struct Row {
    /// Matrix order.
    pub n: usize,
    /// `whole-matrix` or an executor name.
    pub what: String,
    /// Wall time of every repetition.
    pub times: Vec<Duration>,
    /// Sampled residual of the last repetition's factor.
    pub residual: f64,
}

impl Row {
    /// Fastest repetition.
    pub fn best(&self) -> Duration {
        self.times.iter().copied().min().unwrap_or_default()
    }

    /// Median repetition.
    pub fn median(&self) -> Duration {
        let mut t = self.times.clone();
        t.sort();
        t.get(t.len() / 2).copied().unwrap_or_default()
    }
}

fn check(a: &Array2<f64>, l: &Array2<f64>, b: usize) -> f64 {
    let cols = kernels::sample_columns(a.nrows(), b, 4, 1);
    kernels::residual_columns(a, l, &cols)
}

/// The baseline: `reps` whole-matrix `dpotrf` calls on `threads` BLAS threads (input copy not timed).
pub fn whole_matrix(a: &Array2<f64>, b: usize, reps: usize, threads: usize) -> anyhow::Result<Row> {
    let mut times = Vec::new();
    let mut residual = f64::NAN;
    for _ in 0..reps {
        let mut l = a.clone();
        let t = Instant::now();
        kernels::with_threads(threads, || kernels::cholesky_in_place(&mut l)).map_err(anyhow::Error::msg)?;
        times.push(t.elapsed());
        residual = check(a, &l, b);
    }
    Ok(Row { n: a.nrows(), what: format!("whole-matrix dpotrf ({} threads)", threads), times, residual })
}

/// The dgemm limit: `reps` whole-matrix `dgemm` calls of the same n³/3 flops as the factorization
/// (C[n×n] −= A[n×k]·B[n×k]ᵀ with k = n/6) on `threads` BLAS threads. dgemm is the fastest BLAS
/// call, so this is the time the machine's cores need for the factorization's flops at BLAS speed.
pub fn dgemm_limit(n: usize, reps: usize, threads: usize) -> Row {
    let k = (n / 6).max(1);
    let a = kernels::generate(n, 5).slice(s![.., ..k]).to_owned();
    let mut c = Array2::<f64>::zeros((n, n));
    let mut times = Vec::new();
    let (ni, ki) = (n as i32, k as i32);
    for _ in 0..reps {
        let t = Instant::now();
        kernels::with_threads(threads, || {
            // SAFETY: contiguous row-major buffers: a is n×k (lda = k), c is n×n (ldc = n).
            unsafe {
                cblas_sys::cblas_dgemm(
                    cblas_sys::CblasRowMajor,
                    cblas_sys::CblasNoTrans,
                    cblas_sys::CblasTrans,
                    ni,
                    ni,
                    ki,
                    -1.0,
                    a.as_ptr(),
                    ki,
                    a.as_ptr(),
                    ki,
                    1.0,
                    c.as_mut_ptr(),
                    ni,
                )
            }
        });
        times.push(t.elapsed());
    }
    Row { n, what: format!("whole-matrix dgemm, n³/3 flops ({} threads)", threads), times, residual: f64::NAN }
}

/// `reps` tiled factorizations on `executor` (built with its default options) with `schedule`,
/// after one small untimed warm-up factorization that starts the workers.
pub fn tiled(executor: &str, a: &Array2<f64>, b: usize, reps: usize, schedule: Schedule) -> anyhow::Result<Row> {
    let plugin = taps::executor::find(executor).map_err(anyhow::Error::msg)?;
    let options = (plugin.parse)(&toml::Table::new(), "engine.executor").map_err(anyhow::Error::msg)?;
    let engine = Engine::builder(options.get_executor(&Default::default())?).try_build()?;
    let warm = kernels::generate(2 * b.min(64), 0);
    factor(&engine, &warm, b.min(64))?;
    let mut times = Vec::new();
    let mut residual = f64::NAN;
    for _ in 0..reps {
        let f = factor_with(&engine, a, b, schedule)?;
        times.push(f.elapsed);
        residual = check(a, &f.l, b);
    }
    let summary = engine.shutdown();
    anyhow::ensure!(summary.failed == 0, "{} task(s) failed on {}", summary.failed, executor);
    let what = format!("{} ({}), {}", executor, engine.executor_name(), schedule.as_str());
    Ok(Row { n: a.nrows(), what, times, residual })
}

/// Runs every case `(n, b)` on the baseline and every available executor of [`EXECUTORS`],
/// printing one line per measurement as it finishes; returns the rows.
pub fn run(cases: &[(usize, usize)], reps: usize) -> anyhow::Result<Vec<Row>> {
    let cores = available_cores();
    let mut rows = Vec::new();
    for &(n, b) in cases {
        anyhow::ensure!(b > 0 && n.is_multiple_of(b), "block size {} does not divide {}", b, n);
        let t = Instant::now();
        let a = kernels::generate(n, 0);
        let tiles = (n / b) as u64;
        println!(
            "cholesky n={} b={} ({} tiles per side, {} tasks), {} cores, OpenBLAS {} kernels; input generated in {:.1}s",
            n,
            b,
            tiles,
            task_count(tiles),
            cores,
            kernels::blas_core(),
            t.elapsed().as_secs_f64()
        );
        let k: Vec<String> = kernels(b, reps).iter().map(|(n, g)| format!("{} {:.1}", n, g)).collect();
        println!("  tile kernels, 1 BLAS thread, GFLOP/s (/2 = half rank): {}", k.join(", "));
        let gemm = dgemm_limit(n, reps, cores);
        print_row(&gemm, None, None);
        let base = whole_matrix(&a, b, reps, cores)?;
        print_row(&base, None, Some(gemm.best()));
        let (limit, gemm_limit) = (base.best(), gemm.best());
        rows.extend([gemm, base]);
        for &e in EXECUTORS {
            if taps::executor::find(e).is_err() {
                println!("  {:<44} not compiled into this build, skipped", e);
                continue;
            }
            for schedule in [Schedule::Barrier, Schedule::Dataflow] {
                match tiled(e, &a, b, reps, schedule) {
                    Ok(r) => {
                        print_row(&r, Some(limit), Some(gemm_limit));
                        rows.push(r);
                    }
                    Err(err) => println!("  {:<44} failed: {:#}", e, err),
                }
            }
        }
    }
    Ok(rows)
}

/// Single-threaded GFLOP/s of the four tile kernels on `b`×`b` tiles (best of `reps`; the input
/// tile copy is not timed).
pub fn kernels(b: usize, reps: usize) -> Vec<(&'static str, f64)> {
    let a = kernels::generate(2 * b, 3);
    let tile = |i: usize, j: usize| a.slice(s![i * b..(i + 1) * b, j * b..(j + 1) * b]).to_owned();
    let (a00, a10, a11) = (tile(0, 0), tile(1, 0), tile(1, 1));
    let l = kernels::potrf(a00.clone()).expect("SPD tile");
    let p = kernels::trsm(&l, a10.clone()).expect("trsm");
    let bf = b as f64;
    let best = |flops: f64, input: &Array2<f64>, f: &dyn Fn(Array2<f64>) -> Result<Array2<f64>, String>| {
        let mut t = f64::INFINITY;
        for _ in 0..reps.max(1) {
            let x = input.clone();
            let s = Instant::now();
            f(x).expect("kernel");
            t = t.min(s.elapsed().as_secs_f64());
        }
        flops / t / 1e9
    };
    let mut li = a00.clone();
    kernels::potrf_with_inverse_in_place(li.view_mut()).expect("SPD tile");
    let with_inverse = |mut x: Array2<f64>| kernels::potrf_with_inverse_in_place(x.view_mut()).map(|_| x);
    let by_inverse = |mut x: Array2<f64>| kernels::trsm_by_inverse_in_place(li.view(), x.view_mut()).map(|_| x);
    vec![
        ("potrf", best(bf.powi(3) / 3.0, &a00, &kernels::potrf)),
        ("potrf+inverse (the task)", best(bf.powi(3) / 3.0, &a00, &with_inverse)),
        ("trsm", best(bf.powi(3), &a10, &|x| kernels::trsm(&l, x))),
        ("trsm by the inverse (the task)", best(bf.powi(3), &a10, &by_inverse)),
        ("syrk", best(bf.powi(3), &a11, &|x| kernels::syrk(x, &p, 0, b))),
        ("gemm", best(2.0 * bf.powi(3), &a10, &|x| kernels::gemm(x, &p, &p, 0, b))),
        ("syrk/2", best(bf.powi(3) / 2.0, &a11, &|x| kernels::syrk(x, &p, 0, b / 2))),
        ("gemm/2", best(bf.powi(3), &a10, &|x| kernels::gemm(x, &p, &p, 0, b / 2))),
    ]
}

fn print_row(r: &Row, limit: Option<Duration>, gemm: Option<Duration>) {
    let flops = (r.n as f64).powi(3) / 3.0;
    let x = |l: Duration| r.best().as_secs_f64() / l.as_secs_f64();
    let ratio =
        [limit.map(|l| format!("{:.2}x the dpotrf call", x(l))), gemm.map(|l| format!("{:.2}x the dgemm limit", x(l)))]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
    let ratio = (!ratio.is_empty()).then(|| format!("  {}", ratio));
    println!(
        "  {:<44} best {:>7.3}s  median {:>7.3}s  ({:>5.1} GFLOP/s, residual {:.1e}){}",
        r.what,
        r.best().as_secs_f64(),
        r.median().as_secs_f64(),
        flops / r.best().as_secs_f64() / 1e9,
        r.residual,
        ratio.unwrap_or_default()
    );
}
