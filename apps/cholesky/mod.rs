//! `cholesky`: tiled Cholesky factorization of a seeded SPD matrix, one task per tile kernel
//! (potrf, trsm, syrk, gemm), with a client barrier after every block column, as in the Python
//! suite, but producing the true factor (checked by a residual). See `apps/cholesky/README.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ndarray::{Array2, s};

use crate::app::{App, AppConfig, AppPlugin, Footprint};
use crate::engine::{Engine, TaskFuture};
use crate::options::Validate;
use crate::task::{Registry, Task, TaskError};
use crate::{app_info, opt_enum};

pub mod kernels;
#[cfg(feature = "hdf5")]
pub mod output;
pub mod tile;

pub use tile::Block;
use tile::{Out, Tile};

/// Largest relative residual `‖L·Lᵀ − A‖_F / ‖A‖_F` accepted; above it the run fails.
pub(crate) const TOLERANCE: f64 = 1e-10;

/// Matrix sizes up to which `verify = auto` computes the full residual (sampled above).
pub(crate) const FULL_CHECK_MAX: u64 = 4000;

/// Random columns per block column in the sampled check (at least 64 columns in all).
fn sample_per_block(tiles: usize) -> usize {
    64usize.div_ceil(tiles.max(1)).max(1)
}

opt_enum! {
    /// How the factor is checked after the run.
    pub enum Verify {
        /// `full` for matrix sizes up to 4000, `sampled` above.
        Auto = "auto",
        /// The residual over the whole matrix (n³ flops on the client).
        Full = "full",
        /// The residual over random columns, at least one in every block column, plus the last.
        Sampled = "sampled",
        /// No check (the residual attribute is NaN).
        None = "none",
    }
}

opt_enum! {
    /// How the block columns follow each other.
    pub enum Schedule {
        /// The reference's: the client waits for every task of a block column (and takes its
        /// tiles back) before it submits the next column's tasks.
        Barrier = "barrier",
        /// No barrier: every task is submitted at once and gets the tiles it updates as the
        /// futures of the tasks that produce them, so a column's potrf starts as soon as its
        /// tile is updated, while the previous column's other updates still run (lookahead).
        Dataflow = "dataflow",
    }
}

crate::options! {
    /// Options of the `cholesky` app.
    pub(crate) struct CholeskyOptions {
        /// Order n of the n×n input matrix.
        matrix_size: u64,
        /// Side of the square tiles; must divide matrix-size.
        block_size: u64,
        /// Seed of the input matrix A = X·Xᵀ + n·I.
        #[skip_default] seed: u64 = 0,
        /// HDF5 file written in the run directory with dataset L (none = write nothing).
        #[skip_default] output: Option<String> = Some("cholesky.h5".into()),
        /// Also store the input matrix as dataset A in the output file.
        #[skip_default] save_input: bool = false,
        /// Residual check after the run: auto, full, sampled or none (fails above 1e-10).
        #[skip_default] verify: Verify = Verify::Auto,
        /// barrier (the reference's: the client waits for each block column) or dataflow (tiles as futures).
        #[skip_default] schedule: Schedule = Schedule::Barrier,
    }
}

impl Validate for CholeskyOptions {
    fn validate(&self) -> Result<(), String> {
        let (m, b) = (self.matrix_size, self.block_size);
        if m == 0 || b == 0 {
            return Err(format!(
                "The matrix size and block size must be greater than 0. Got matrix_size={} and block_size={}.",
                m, b
            ));
        }
        if b > m || !m.is_multiple_of(b) {
            return Err(format!(
                "The matrix size must be greater than or equal to the block size and the block size must evenly \
                 divide the matrix size. Got matrix_size={} and block_size={}.",
                m, b
            ));
        }
        if m > i32::MAX as u64 {
            return Err(format!("app.matrix_size must be at most {} (32-bit BLAS indices), got {}", i32::MAX, m));
        }
        if let Some(f) = &self.output {
            if f.is_empty() || f.contains('/') || f == "." || f == ".." {
                return Err(format!(
                    "app.output: expected a file name inside the run directory (or none), got {:?}",
                    f
                ));
            }
            if !cfg!(feature = "hdf5") {
                return Err(format!(
                    "app.output is {:?}, but this taps was built without HDF5 support (cargo feature `hdf5`, \
                     needs libhdf5-dev): pass --app.output none or rebuild with default features",
                    f
                ));
            }
        } else if self.save_input {
            return Err("app.save_input needs an output file, but app.output is none".into());
        }
        Ok(())
    }
}

/// The plugin entry.
pub const PLUGIN: AppPlugin = AppPlugin {
    plugin: crate::plugin!(
        dyn AppConfig,
        CholeskyOptions,
        "cholesky",
        "tiled Cholesky factorization (potrf/trsm/syrk/gemm tasks)"
    ),
    register_tasks,
};

/// At least the input A and the factor L, n² doubles each; the output file.
fn footprint(o: &CholeskyOptions) -> Footprint {
    let n = o.matrix_size;
    Footprint {
        memory_bytes: n.saturating_mul(n).saturating_mul(8 * 2),
        memory_for: format!("the input matrix and its factor, app.matrix_size² = {}² doubles each", n),
        files: o.output.iter().cloned().map(|f| ("app.output".to_string(), f)).collect(),
    }
}

fn register_tasks(r: &mut Registry) {
    r.add::<Potrf>().add::<Trsm>().add::<Syrk>().add::<Gemm>();
}

impl AppConfig for CholeskyOptions {
    fn get_app(&self, _: &Path) -> anyhow::Result<Box<dyn App>> {
        let opts = self.clone();
        Ok(Box::new(CholeskyApp { opts, result: None }))
    }

    fn footprint(&self) -> Footprint {
        footprint(self)
    }
}

fn kernel_error(name: &str) -> impl FnOnce(String) -> TaskError + '_ {
    move |m| TaskError::exception("LinAlgError", format!("{}: {}", name, m))
}

fn tile_of(a: Array2<f64>) -> Tile {
    Arc::new(Block::from(a))
}

/// `potrf(A_kk)`: the lower Cholesky factor `L_kk` of a diagonal tile, with the strict upper
/// triangle of `L_kk⁻ᵀ` above its diagonal (which `trsm` multiplies by instead of solving;
/// [`factor`] keeps only `L_kk`).
pub(crate) struct Potrf;

impl Task for Potrf {
    const NAME: &'static str = "potrf";
    type Args = (Tile,);
    type Output = Tile;
    fn run((a,): Self::Args) -> Result<Tile, TaskError> {
        let mut out = Out::of(a);
        kernels::potrf_with_inverse_in_place(out.view_mut()).map_err(kernel_error(Self::NAME))?;
        Ok(out.done())
    }
}

/// `trsm(L_kk, A_ik)`: the panel tile `L_ik = A_ik·L_kk⁻ᵀ` (one `dtrmm` by the inverse that
/// `potrf` left above the diagonal; a solve when there is none).
pub(crate) struct Trsm;

impl Task for Trsm {
    const NAME: &'static str = "trsm";
    type Args = (Tile, Tile);
    type Output = Tile;
    fn run((l, a): Self::Args) -> Result<Tile, TaskError> {
        let mut out = Out::of(a);
        kernels::trsm_by_inverse_in_place(l.view(), out.view_mut()).map_err(kernel_error(Self::NAME))?;
        Ok(out.done())
    }
}

/// `syrk(A_ii, L_ik, c0, c1)`: `A_ii − L_ik[:, c0..c1]·L_ik[:, c0..c1]ᵀ` (lower triangle).
pub(crate) struct Syrk;

impl Task for Syrk {
    const NAME: &'static str = "syrk";
    type Args = (Tile, Tile, u64, u64);
    type Output = Tile;
    fn run((a, l, c0, c1): Self::Args) -> Result<Tile, TaskError> {
        let mut out = Out::of(a);
        kernels::syrk_in_place(out.view_mut(), l.view(), c0 as usize, c1 as usize).map_err(kernel_error(Self::NAME))?;
        Ok(out.done())
    }
}

/// `gemm(A_ij, L_ik, L_jk, c0, c1)`: `A_ij − L_ik[:, c0..c1]·L_jk[:, c0..c1]ᵀ`.
pub(crate) struct Gemm;

impl Task for Gemm {
    const NAME: &'static str = "gemm";
    type Args = (Tile, Tile, Tile, u64, u64);
    type Output = Tile;
    fn run((a, li, lj, c0, c1): Self::Args) -> Result<Tile, TaskError> {
        let mut out = Out::of(a);
        kernels::gemm_in_place(out.view_mut(), li.view(), lj.view(), c0 as usize, c1 as usize)
            .map_err(kernel_error(Self::NAME))?;
        Ok(out.done())
    }
}

/// Number of tasks of the tiled factorization with `t` tiles per side: `t(t+1)(2t+1)/6`,
/// the same as the Python suite's.
pub fn task_count(t: u64) -> u64 {
    t * (t + 1) * (2 * t + 1) / 6
}

/// What [`factor`] produced.
#[derive(Debug)]
pub struct Factorization {
    /// The lower Cholesky factor (strict upper triangle zero).
    pub l: Array2<f64>,
    /// Tasks submitted.
    pub tasks: u64,
    /// Wall time from the first submission to the last result of the last block column (the
    /// makespan; splitting A into tiles and assembling L are not included).
    pub elapsed: Duration,
}

fn tile(w: &Array2<f64>, i: usize, j: usize, b: usize) -> Array2<f64> {
    w.slice(s![i * b..(i + 1) * b, j * b..(j + 1) * b]).to_owned()
}

fn get(f: &TaskFuture<Tile>, what: impl FnOnce() -> String) -> anyhow::Result<Tile> {
    f.result().map_err(|e| anyhow::anyhow!("{} failed: {}", what(), e))
}

/// A tile of the working matrix: its value, or the task that produces it.
enum Cell {
    Ready(Tile),
    Pending(TaskFuture<Tile>),
}

impl From<Cell> for crate::task::Arg<Tile> {
    /// The argument of the one task that updates the tile next (a future is moved, not cloned:
    /// nothing else holds the tile, which the task then updates in place).
    fn from(c: Cell) -> Self {
        match c {
            Cell::Ready(t) => t.into(),
            Cell::Pending(f) => crate::task::Arg::Future(f),
        }
    }
}

/// The lower tiles of the working matrix; each is moved into the one task that updates it in a
/// block column and replaced by that task's result (at the barrier) or future (dataflow).
struct Grid(Vec<Vec<Option<Cell>>>);

impl Grid {
    fn take(&mut self, i: usize, j: usize) -> Cell {
        self.0[i][j].take().expect("each tile is used by one task per block column")
    }

    fn put(&mut self, i: usize, j: usize, t: Tile) {
        self.0[i][j] = Some(Cell::Ready(t));
    }

    fn put_future(&mut self, i: usize, j: usize, f: TaskFuture<Tile>) {
        self.0[i][j] = Some(Cell::Pending(f));
    }
}

/// Factors the SPD matrix `a` with tiles of side `b` through `engine`: for each block column k,
/// `potrf` of the diagonal tile, `trsm` of the tiles below it, and for every trailing lower tile
/// (i, j), k < j ≤ i, the update `A_ij −= L_ik·L_jkᵀ` as two chained tasks (`syrk` on the
/// diagonal, `gemm` off it), each applying half of the panel's columns. The client then waits for
/// every task of the block column (the barrier) and stores the tiles before the next one.
pub fn factor(engine: &Engine, a: &Array2<f64>, b: usize) -> anyhow::Result<Factorization> {
    factor_with(engine, a, b, Schedule::Barrier)
}

/// [`factor`] with the given [`Schedule`]: with [`Schedule::Dataflow`] the same tasks, without
/// the barrier (each task gets the tiles it updates as futures; the client waits once, at the
/// end).
pub fn factor_with(engine: &Engine, a: &Array2<f64>, b: usize, schedule: Schedule) -> anyhow::Result<Factorization> {
    let n = a.nrows();
    anyhow::ensure!(a.ncols() == n, "the matrix must be square, got {}x{}", n, a.ncols());
    anyhow::ensure!(b > 0 && n.is_multiple_of(b), "block size {} does not divide matrix size {}", b, n);
    let t = n / b;
    let (half, full) = ((b / 2) as u64, b as u64);
    let mut grid =
        Grid((0..t).map(|i| (0..=i).map(|j| Some(Cell::Ready(tile_of(tile(a, i, j, b))))).collect()).collect());
    let start = Instant::now();
    let mut tasks = 0u64;
    for k in 0..t {
        let potrf = engine.submit::<Potrf>((grid.take(k, k).into(),));
        let trsm: Vec<TaskFuture<Tile>> =
            (k + 1..t).map(|i| engine.submit::<Trsm>(((&potrf).into(), grid.take(i, k).into()))).collect();
        let panel = |i: usize| &trsm[i - k - 1];
        // The reference's pair (i, j), j >= i, becomes the lower tile (j, i).
        let mut updates = Vec::new();
        for j in k + 1..t {
            for i in j..t {
                let a_ij = grid.take(i, j).into();
                let last = if i == j {
                    let first = engine.submit::<Syrk>((a_ij, panel(i).into(), 0.into(), half.into()));
                    engine.submit::<Syrk>(((&first).into(), panel(i).into(), half.into(), full.into()))
                } else {
                    let first = engine.submit::<Gemm>((a_ij, panel(i).into(), panel(j).into(), 0.into(), half.into()));
                    engine.submit::<Gemm>(((&first).into(), panel(i).into(), panel(j).into(), half.into(), full.into()))
                };
                updates.push(((i, j), last));
            }
        }
        let m = (t - k - 1) as u64;
        tasks += 1 + m + m * (m + 1);
        if schedule == Schedule::Dataflow {
            // The next tasks take these tiles as futures; the client waits at the end.
            grid.put_future(k, k, potrf);
            for (i, f) in (k + 1..t).zip(trsm) {
                grid.put_future(i, k, f);
            }
            for ((i, j), f) in updates {
                grid.put_future(i, j, f);
            }
            continue;
        }
        // Barrier: every tile of this block column is back on the client before the next one.
        grid.put(k, k, get(&potrf, || format!("potrf of tile ({}, {})", k, k))?);
        for (i, f) in (k + 1..t).zip(&trsm) {
            grid.put(i, k, get(f, || format!("trsm of tile ({}, {})", i, k))?);
        }
        for ((i, j), f) in &updates {
            grid.put(*i, *j, get(f, || format!("update of tile ({}, {})", i, j))?);
        }
        tracing::debug!("block column {}/{} done ({:.3}s)", k + 1, t, start.elapsed().as_secs_f64());
    }
    // Dataflow: every tile's last task, waited for once.
    for (i, row) in grid.0.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            if let Some(Cell::Pending(f)) = cell {
                *cell = Some(Cell::Ready(get(f, || format!("the last task of tile ({}, {})", i, j))?));
            }
        }
    }
    let elapsed = start.elapsed();
    let mut l = Array2::<f64>::zeros((n, n));
    for (i, row) in grid.0.iter().enumerate() {
        for (j, t) in row.iter().enumerate() {
            let Some(Cell::Ready(t)) = t else { unreachable!("every tile is back after its barrier") };
            let mut block = l.slice_mut(s![i * b..(i + 1) * b, j * b..(j + 1) * b]);
            block.assign(&t.view());
            if i == j {
                // potrf's tile holds L_kk⁻ᵀ above the diagonal.
                kernels::lower(block);
            }
        }
    }
    Ok(Factorization { l, tasks, elapsed })
}

/// How the residual was computed.
#[derive(Clone, Debug, PartialEq)]
pub enum Residual {
    /// Over the whole matrix.
    Full(f64),
    /// Over these many columns.
    Sampled(f64, usize),
    /// Not computed.
    Skipped,
}

impl Residual {
    /// The value (NaN when skipped).
    pub fn value(&self) -> f64 {
        match self {
            Residual::Full(r) | Residual::Sampled(r, _) => *r,
            Residual::Skipped => f64::NAN,
        }
    }

    /// Fails when the residual exceeds [`TOLERANCE`] or is NaN (a skipped check passes).
    pub(crate) fn accept(&self) -> anyhow::Result<()> {
        match self {
            Residual::Skipped => Ok(()),
            r if r.value() <= TOLERANCE => Ok(()),
            r => anyhow::bail!(
                "the residual {:.3e} exceeds the tolerance {:.0e}: L is not the Cholesky factor of A",
                r.value(),
                TOLERANCE
            ),
        }
    }

    /// `full`, `sampled (S of N columns)` or `none`.
    pub fn method(&self, n: usize) -> String {
        match self {
            Residual::Full(_) => "full".into(),
            Residual::Sampled(_, s) => format!("sampled ({} of {} columns)", s, n),
            Residual::Skipped => "none".into(),
        }
    }
}

/// Computes the residual of `l` as `verify` says (block size `b`, column sample seeded by `seed`).
pub fn residual(a: &Array2<f64>, l: &Array2<f64>, b: usize, verify: Verify, seed: u64) -> Residual {
    let n = a.nrows();
    let full = match verify {
        Verify::None => return Residual::Skipped,
        Verify::Auto => n as u64 <= FULL_CHECK_MAX,
        Verify::Full => true,
        Verify::Sampled => false,
    };
    if full {
        Residual::Full(kernels::residual_full(a, l))
    } else {
        let cols = kernels::sample_columns(n, b, sample_per_block(n / b), seed);
        Residual::Sampled(kernels::residual_columns(a, l, &cols), cols.len())
    }
}

/// Shows small matrices in full, as the reference does for n ≤ 8.
fn small(a: &Array2<f64>) -> String {
    if a.nrows() <= 8 { format!("\n{:.6}", a) } else { String::new() }
}

/// The cholesky workflow.
pub(crate) struct CholeskyApp {
    opts: CholeskyOptions,
    /// The input A and the factor L, from `run` until `save` checks and writes them.
    result: Option<(Array2<f64>, Array2<f64>)>,
}

impl App for CholeskyApp {
    fn run(&mut self, engine: &Engine, _run_dir: &Path) -> anyhow::Result<()> {
        let (n, b) = (self.opts.matrix_size as usize, self.opts.block_size as usize);
        let t0 = Instant::now();
        let a = kernels::generate(n, self.opts.seed);
        app_info!("Generated input matrix: ({}, {}){}", n, n, small(&a));
        tracing::debug!("input generated in {:.3}s (seed {})", t0.elapsed().as_secs_f64(), self.opts.seed);
        app_info!("Block size: {}", b);
        let f = factor_with(engine, &a, b, self.opts.schedule)?;
        app_info!(
            "Factored {}x{} tiles with {} tasks (makespan={:.3}s)",
            n / b,
            n / b,
            f.tasks,
            f.elapsed.as_secs_f64()
        );
        app_info!("Output matrix: ({}, {}){}", n, n, small(&f.l));
        self.result = Some((a, f.l));
        Ok(())
    }

    fn save(&mut self, run_dir: &Path) -> anyhow::Result<()> {
        let Some((a, l)) = self.result.take() else { return Ok(()) };
        let (n, b) = (self.opts.matrix_size as usize, self.opts.block_size as usize);
        let t1 = Instant::now();
        let r = residual(&a, &l, b, self.opts.verify, self.opts.seed);
        match &r {
            Residual::Skipped => app_info!("Residual check skipped (verify=none)"),
            r => app_info!(
                "Residual ||L*L^T - A||_F / ||A||_F = {:.3e} ({}, elapsed={:.3}s)",
                r.value(),
                r.method(n),
                t1.elapsed().as_secs_f64()
            ),
        }
        r.accept()?;
        if let Some(name) = &self.opts.output {
            let t2 = Instant::now();
            let path: PathBuf = run_dir.join(name);
            let input = self.opts.save_input.then_some(&a);
            write_output(&path, &l, input, &self.opts, &r)?;
            app_info!(
                "Wrote {} (L{}, elapsed={:.3}s)",
                path.display(),
                if input.is_some() { " and A" } else { "" },
                t2.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}

#[cfg(feature = "hdf5")]
fn write_output(
    path: &Path,
    l: &Array2<f64>,
    a: Option<&Array2<f64>>,
    o: &CholeskyOptions,
    r: &Residual,
) -> anyhow::Result<()> {
    let attrs = output::Attributes {
        matrix_size: o.matrix_size,
        block_size: o.block_size,
        seed: o.seed,
        residual: r.value(),
        residual_method: r.method(o.matrix_size as usize),
    };
    output::write(path, l, a, o.block_size as usize, &attrs)
}

#[cfg(not(feature = "hdf5"))]
fn write_output(
    path: &Path,
    _: &Array2<f64>,
    _: Option<&Array2<f64>>,
    _: &CholeskyOptions,
    _: &Residual,
) -> anyhow::Result<()> {
    anyhow::bail!("cannot write {}: this taps was built without HDF5 support (cargo feature `hdf5`)", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::thread_pool::ThreadPool;
    use crate::options::Options;

    fn opts(m: u64, b: u64) -> Result<CholeskyOptions, String> {
        opts_with(m, b, "\"none\"")
    }

    fn opts_with(m: u64, b: u64, output: &str) -> Result<CholeskyOptions, String> {
        let t: toml::Table =
            toml::from_str(&format!("matrix_size = {}\nblock_size = {}\noutput = {}", m, b, output)).unwrap();
        CholeskyOptions::from_table(&t, "app")
    }

    #[test]
    fn sizes_are_validated_with_the_reference_messages() {
        assert!(opts(200, 50).is_ok());
        let e = opts(0, 5).unwrap_err();
        assert!(
            e.starts_with("The matrix size and block size must be greater than 0")
                && e.contains("matrix_size=0 and block_size=5"),
            "{}",
            e
        );
        for (m, b) in [(10, 3), (4, 8)] {
            let e = opts(m, b).unwrap_err();
            assert!(
                e.contains("evenly divide") && e.contains(&format!("matrix_size={} and block_size={}", m, b)),
                "{}",
                e
            );
        }
    }

    #[test]
    fn output_must_be_a_file_name() {
        let t: toml::Table = toml::from_str("matrix_size = 4\nblock_size = 2\noutput = \"a/b.h5\"").unwrap();
        assert!(CholeskyOptions::from_table(&t, "app").unwrap_err().contains("app.output"));
        let t: toml::Table = toml::from_str("matrix_size = 4\nblock_size = 2\noutput = \"none\"").unwrap();
        assert_eq!(CholeskyOptions::from_table(&t, "app").unwrap().output, None);
    }

    #[cfg(not(feature = "hdf5"))]
    #[test]
    fn output_without_hdf5_is_a_clear_error() {
        let e = opts_with(4, 2, "\"cholesky.h5\"").unwrap_err();
        assert!(e.contains("without HDF5 support") && e.contains("--app.output none"), "{}", e);
    }

    #[test]
    fn residuals_above_the_tolerance_fail_the_run() {
        assert!(Residual::Full(1e-16).accept().is_ok());
        assert!(Residual::Sampled(9e-11, 64).accept().is_ok());
        assert!(Residual::Skipped.accept().is_ok());
        let e = Residual::Full(2e-10).accept().unwrap_err().to_string();
        assert!(e.contains("2.000e-10") && e.contains("1e-10"), "{}", e);
        assert!(Residual::Sampled(f64::NAN, 64).accept().is_err());
    }

    #[test]
    fn task_count_matches_the_reference() {
        assert_eq!([1, 2, 4, 10].map(task_count), [1, 5, 30, 385]);
    }

    #[test]
    fn tiled_factor_is_the_cholesky_factor() {
        for schedule in [Schedule::Barrier, Schedule::Dataflow] {
            let engine = Engine::builder(Box::new(ThreadPool::new(2))).build();
            for (n, b) in [(12, 3), (10, 10), (8, 1), (40, 8)] {
                let a = kernels::generate(n, 11);
                let f = factor_with(&engine, &a, b, schedule).unwrap();
                assert_eq!(f.tasks, task_count((n / b) as u64));
                let mut want = a.clone();
                kernels::cholesky_in_place(&mut want).unwrap();
                let diff = (&f.l - &want).iter().fold(0.0f64, |m, x| m.max(x.abs()));
                assert!(diff < 1e-9, "{:?} n={} b={}: max |L - L_ref| = {}", schedule, n, b, diff);
                assert!(kernels::residual_full(&a, &f.l) < 1e-14);
            }
            let summary = engine.shutdown();
            assert_eq!(summary.submitted, task_count(4) + task_count(1) + task_count(8) + task_count(5));
            assert_eq!(summary.failed, 0);
        }
    }

    #[test]
    fn a_matrix_that_is_not_spd_fails_the_run_with_the_tile() {
        let engine = Engine::builder(Box::new(ThreadPool::new(2))).build();
        let mut a = kernels::generate(8, 1);
        a[[5, 5]] = -1.0;
        let e = factor(&engine, &a, 4).unwrap_err().to_string();
        assert!(e.contains("potrf of tile (1, 1)") && e.contains("not positive definite"), "{}", e);
        // Without the barrier the failure reaches the client through the tile's last task.
        let e = factor_with(&engine, &a, 4, Schedule::Dataflow).unwrap_err().to_string();
        assert!(e.contains("tile (1, 1)") && e.contains("not positive definite"), "{}", e);
    }
}
