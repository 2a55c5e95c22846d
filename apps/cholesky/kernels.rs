//! Dense kernels from the system OpenBLAS (BLAS through `cblas-sys`, LAPACK through `lapack-sys`)
//! on row-major `ndarray` matrices: the four tile kernels, the whole-matrix Cholesky that the
//! benchmark compares against, the seeded input matrix and the residual checks.
//!
//! LAPACK is column-major. A row-major matrix seen column-major is its transpose, so `dpotrf`
//! with `uplo = 'U'` on a row-major symmetric matrix reads its lower triangle and writes the
//! lower Cholesky factor `L` (row-major) with `L·Lᵀ = A`.
//!
//! Threads: OpenBLAS has one process-wide thread count. The tile kernels run with one BLAS thread
//! (the executor supplies the parallelism); the client-side whole-matrix operations (input
//! generation, baseline, residual) use every core. See [`single_threaded`] and [`with_threads`].

use std::ffi::{c_char, c_int};
use std::sync::Mutex;

use cblas_sys::{
    CblasLower, CblasNoTrans, CblasNonUnit, CblasRight, CblasRowMajor, CblasTrans, CblasUpper, cblas_dgemm,
    cblas_dsyrk, cblas_dtrmm, cblas_dtrsm,
};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, s};
use rand::{Rng, SeedableRng, seq::index};
use rand_chacha::ChaCha8Rng;
use rand_distr::{ChiSquared, Distribution, StandardNormal};

// Links the system libopenblas (Debian's libopenblas-dev): BLAS, CBLAS and LAPACK in one library,
// which also resolves the cblas-sys symbols ndarray's `blas` feature uses. (openblas-src would only
// emit this link line, but its build script compiles an HTTP/TLS stack to offer a download.)
#[link(name = "openblas")]
unsafe extern "C" {
    fn openblas_set_num_threads(n: c_int);
    fn openblas_get_num_threads() -> c_int;
    fn openblas_get_corename() -> *const c_char;
    fn openblas_get_config() -> *const c_char;
}

/// The environment variable that makes a DYNAMIC_ARCH OpenBLAS use a given kernel set.
pub const CORETYPE_VAR: &str = "OPENBLAS_CORETYPE";

/// The kernel set OpenBLAS chose at load time (e.g. `SkylakeX`, `Haswell`, `Prescott`).
pub fn blas_core() -> String {
    // SAFETY: OpenBLAS returns a pointer to a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(openblas_get_corename()) }.to_string_lossy().into_owned()
}

/// OpenBLAS's build configuration (version, DYNAMIC_ARCH, thread model, core).
pub fn blas_config() -> String {
    // SAFETY: as for `blas_core`.
    unsafe { std::ffi::CStr::from_ptr(openblas_get_config()) }.to_string_lossy().trim().to_string()
}

/// The kernel set this CPU supports when OpenBLAS fell back to a generic one.
///
/// OpenBLAS picks its kernels from the CPU's family and model numbers. Under a hypervisor that
/// hides them, or on a CPU newer than the OpenBLAS release (Debian 12's 0.3.21 on Sapphire
/// Rapids), it falls back to `Prescott`: SSE3 kernels, about 4× slower than the AVX-512 ones on
/// the same CPU. This looks at the instruction sets the CPU and the kernel actually offer instead.
/// `None` when OpenBLAS's choice is not a fallback, or nothing better is available.
pub fn better_core(current: &str) -> Option<&'static str> {
    const FALLBACKS: [&str; 6] = ["Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Unknown"];
    if !FALLBACKS.iter().any(|f| f.eq_ignore_ascii_case(current)) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
            return Some("SkylakeX");
        }
        if has!("avx2") && has!("fma") {
            return Some("Haswell");
        }
        if has!("avx") {
            return Some("SandyBridge");
        }
    }
    None
}

/// Restarts this process with `OPENBLAS_CORETYPE` set when OpenBLAS fell back to a generic kernel
/// set on a CPU that has a better one (see [`better_core`]). OpenBLAS reads the variable once, when
/// it is loaded, so it must be in the environment before the process starts; child processes
/// (workers, mpirun and its ranks) inherit it. A value the user set is always kept. Returns only
/// when no restart is needed (or `exec` failed, which leaves the run correct, only slower).
pub fn use_best_blas_kernels() {
    if std::env::var_os(CORETYPE_VAR).is_some() {
        return;
    }
    let Some(core) = better_core(&blas_core()) else { return };
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else { return };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    let _ = std::process::Command::new(exe).arg0(arg0).args(args).env(CORETYPE_VAR, core).exec();
}

static THREADS: Mutex<()> = Mutex::new(());

/// OpenBLAS's current thread count (process-wide).
pub(crate) fn blas_threads() -> usize {
    // SAFETY: a plain getter of OpenBLAS's global thread count.
    unsafe { openblas_get_num_threads() as usize }
}

/// Sets OpenBLAS's thread count for the whole process.
pub(crate) fn set_blas_threads(n: usize) {
    let _g = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: serialised by THREADS; OpenBLAS accepts any count >= 1.
    unsafe { openblas_set_num_threads(n.clamp(1, c_int::MAX as usize) as c_int) }
}

/// Makes BLAS single-threaded (called by every tile kernel; cheap when it already is).
pub(crate) fn single_threaded() {
    if blas_threads() != 1 {
        set_blas_threads(1);
    }
}

/// Runs `f` with `n` BLAS threads, then returns to one thread (the tile kernels' setting).
pub fn with_threads<R>(n: usize, f: impl FnOnce() -> R) -> R {
    set_blas_threads(n);
    let r = f();
    set_blas_threads(1);
    r
}

fn blas_int(x: usize, what: &str) -> Result<c_int, String> {
    c_int::try_from(x).map_err(|_| format!("{} {} exceeds the 32-bit BLAS index range", what, x))
}

/// Makes `a` row-major contiguous (tiles from other processes already are).
fn standard(a: &mut Array2<f64>) {
    if !a.is_standard_layout() {
        *a = a.as_standard_layout().into_owned();
    }
}

/// The buffer of a matrix being written in place, which must be row-major contiguous.
fn buffer(a: &mut ArrayViewMut2<f64>, what: &str) -> Result<*mut f64, String> {
    if !a.is_standard_layout() {
        return Err(format!("{}: the tile being written must be row-major contiguous", what));
    }
    Ok(a.as_mut_ptr())
}

fn square(a: &ArrayViewMut2<f64>, what: &str) -> Result<usize, String> {
    let (r, c) = a.dim();
    if r != c {
        return Err(format!("{} must be square, got {}x{}", what, r, c));
    }
    Ok(r)
}

/// The diagonal minor at which a Cholesky factorization failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NotPositiveDefinite {
    /// 1-based order of the leading minor that is not positive definite.
    pub minor: usize,
}

impl std::fmt::Display for NotPositiveDefinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the matrix is not positive definite (leading minor of order {} is not)", self.minor)
    }
}

/// In-place lower Cholesky factor of the symmetric matrix `a` (only its lower triangle is read);
/// the strict upper triangle is set to zero. One LAPACK `dpotrf` call with the current BLAS threads.
pub fn cholesky_in_place(a: &mut Array2<f64>) -> Result<(), String> {
    standard(a);
    potrf_view(a.view_mut())
}

/// [`cholesky_in_place`] of a row-major contiguous view.
fn potrf_view(mut a: ArrayViewMut2<f64>) -> Result<(), String> {
    let n = square(&a, "the matrix")?;
    if n == 0 {
        return Ok(());
    }
    let nn = blas_int(n, "matrix size")?;
    let ptr = buffer(&mut a, "potrf")?;
    let uplo = b'U' as c_char;
    let mut info: c_int = 0;
    // SAFETY: `a` is a contiguous n×n buffer; lda = n; see the module doc for 'U' on row-major data.
    unsafe { lapack_sys::dpotrf_(&uplo, &nn, ptr, &nn, &mut info) };
    if info > 0 {
        return Err(NotPositiveDefinite { minor: info as usize }.to_string());
    }
    if info < 0 {
        return Err(format!("dpotrf rejected argument {}", -info));
    }
    for (i, mut row) in a.axis_iter_mut(Axis(0)).enumerate() {
        row.slice_mut(s![i + 1..]).fill(0.0);
    }
    Ok(())
}

/// `potrf` tile kernel: the lower Cholesky factor of a diagonal tile (single-threaded BLAS).
pub fn potrf(mut a: Array2<f64>) -> Result<Array2<f64>, String> {
    standard(&mut a);
    potrf_in_place(a.view_mut())?;
    Ok(a)
}

/// [`potrf`] in place on a row-major contiguous tile.
pub fn potrf_in_place(a: ArrayViewMut2<f64>) -> Result<(), String> {
    single_threaded();
    potrf_view(a)
}

thread_local! {
    /// A tile-sized buffer per thread for the inverse-based kernels (reused, so never fresh memory).
    static SCRATCH: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Side of the blocks in which a triangle is transposed.
const T_BLOCK: usize = 64;

/// The tiled factorization's `potrf`: the lower Cholesky factor `L` of a diagonal tile (row-major
/// contiguous, in place) with the strict upper triangle of `L⁻ᵀ` above its diagonal, for
/// [`trsm_by_inverse_in_place`]: LAPACK's `dtrsm` at tile sizes runs at a third of the speed of
/// `dtrmm`, so the panel's solves become multiplications by the inverse, computed once per block
/// column (`dtrtri`). Use [`lower`] to read `L` alone.
pub fn potrf_with_inverse_in_place(mut a: ArrayViewMut2<f64>) -> Result<(), String> {
    potrf_in_place(a.view_mut())?;
    let n = a.nrows();
    if n < 2 {
        return Ok(());
    }
    let nn = blas_int(n, "matrix size")?;
    let a = a.as_slice_mut().ok_or("potrf: the tile must be row-major contiguous")?;
    SCRATCH.with(|s| {
        let mut inv = s.borrow_mut();
        inv.clear();
        inv.extend_from_slice(a);
        let (uplo, diag, mut info) = (b'U' as c_char, b'N' as c_char, 0 as c_int);
        // SAFETY: a contiguous n×n buffer; row-major lower L is column-major upper Lᵀ, whose
        // inverse L⁻ᵀ (column-major upper) is L⁻¹ read row-major.
        unsafe { lapack_sys::dtrtri_(&uplo, &diag, &nn, inv.as_mut_ptr(), &nn, &mut info) };
        if info != 0 {
            return Err(format!("dtrtri failed ({}) on a Cholesky factor", info));
        }
        // a[j][i] = L⁻¹[i][j] for i > j: the strict upper triangle of L⁻ᵀ.
        for ib in (0..n).step_by(T_BLOCK) {
            for jb in (0..=ib).step_by(T_BLOCK) {
                for i in ib..(ib + T_BLOCK).min(n) {
                    for j in jb..(jb + T_BLOCK).min(i) {
                        a[j * n + i] = inv[i * n + j];
                    }
                }
            }
        }
        Ok(())
    })
}

/// The lower triangle of `a` with zeros above it (`L` of [`potrf_with_inverse_in_place`]).
pub fn lower(mut a: ArrayViewMut2<f64>) {
    for (i, mut row) in a.axis_iter_mut(Axis(0)).enumerate() {
        row.slice_mut(s![i + 1..]).fill(0.0);
    }
}

/// `trsm` of the tiled factorization: `B·L⁻ᵀ` in place on a row-major contiguous tile `b`, for
/// `l` from [`potrf_with_inverse_in_place`] (`L` with `L⁻ᵀ`'s strict upper triangle above it):
/// one `dtrmm` by `L⁻ᵀ`. A plain lower-triangular `l` (zeros above the diagonal) is solved with
/// [`trsm_in_place`].
pub fn trsm_by_inverse_in_place(l: ArrayView2<f64>, mut b: ArrayViewMut2<f64>) -> Result<(), String> {
    let (n, ln) = l.dim();
    let (m, bn) = b.dim();
    if n != ln || bn != n || m == 0 || n < 2 {
        return trsm_in_place(l, b);
    }
    single_threaded();
    let l = l.as_standard_layout();
    let l = l.as_slice().expect("standard layout is contiguous");
    let (mi, ni) = (blas_int(m, "rows")?, blas_int(n, "columns")?);
    let ptr = buffer(&mut b, "trsm")?;
    SCRATCH
        .with(|s| {
            let mut u = s.borrow_mut();
            u.resize(n * n, 0.0);
            // L⁻ᵀ: the strict upper triangle as stored, and 1/L_ii on the diagonal.
            let mut inverse = false;
            for i in 0..n {
                u[i * n + i] = 1.0 / l[i * n + i];
                let (src, dst) = (&l[i * n + i + 1..(i + 1) * n], &mut u[i * n + i + 1..(i + 1) * n]);
                dst.copy_from_slice(src);
                inverse |= src.iter().any(|&x| x != 0.0);
            }
            if !inverse {
                return None;
            }
            // SAFETY: `u` is n×n row-major (only its upper triangle is read), `b` m×n row-major.
            unsafe {
                cblas_dtrmm(
                    CblasRowMajor,
                    CblasRight,
                    CblasUpper,
                    CblasNoTrans,
                    CblasNonUnit,
                    mi,
                    ni,
                    1.0,
                    u.as_ptr(),
                    ni,
                    ptr,
                    ni,
                )
            };
            Some(())
        })
        .map_or_else(|| trsm_in_place(l_view(l, n), b), Ok)
}

fn l_view(l: &[f64], n: usize) -> ArrayView2<'_, f64> {
    ArrayView2::from_shape((n, n), l).expect("n×n")
}

/// `trsm` tile kernel: `B·L⁻ᵀ` (solves `X·Lᵀ = B`) for a lower-triangular tile `l`.
pub fn trsm(l: &Array2<f64>, mut b: Array2<f64>) -> Result<Array2<f64>, String> {
    standard(&mut b);
    trsm_in_place(l.view(), b.view_mut())?;
    Ok(b)
}

/// [`trsm`] in place on a row-major contiguous tile `b`.
pub fn trsm_in_place(l: ArrayView2<f64>, mut b: ArrayViewMut2<f64>) -> Result<(), String> {
    single_threaded();
    let (n, ln) = l.dim();
    if n != ln {
        return Err(format!("trsm: the diagonal factor must be square, got {}x{}", n, ln));
    }
    let l = l.as_standard_layout();
    let (m, bn) = b.dim();
    if bn != n {
        return Err(format!("trsm: the tile has {} columns but the factor is {}x{}", bn, n, n));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (mi, ni) = (blas_int(m, "rows")?, blas_int(n, "columns")?);
    let ptr = buffer(&mut b, "trsm")?;
    // SAFETY: both buffers are contiguous row-major with the leading dimensions passed.
    unsafe {
        cblas_dtrsm(
            CblasRowMajor,
            CblasRight,
            CblasLower,
            CblasTrans,
            CblasNonUnit,
            mi,
            ni,
            1.0,
            l.as_ptr(),
            ni,
            ptr,
            ni,
        )
    };
    Ok(())
}

fn check_cols(p: &ArrayView2<f64>, c0: usize, c1: usize, what: &str) -> Result<(), String> {
    if c0 > c1 || c1 > p.ncols() {
        return Err(format!("{}: column range {}..{} outside a tile with {} columns", what, c0, c1, p.ncols()));
    }
    Ok(())
}

/// `syrk` tile kernel: `C − P·Pᵀ` on the lower triangle of the diagonal tile `c`, with
/// `P = p[:, c0..c1]` (a rank-(c1−c0) update).
pub fn syrk(mut c: Array2<f64>, p: &Array2<f64>, c0: usize, c1: usize) -> Result<Array2<f64>, String> {
    standard(&mut c);
    syrk_in_place(c.view_mut(), p.view(), c0, c1)?;
    Ok(c)
}

/// [`syrk`] in place on a row-major contiguous tile `c`.
pub fn syrk_in_place(mut c: ArrayViewMut2<f64>, p: ArrayView2<f64>, c0: usize, c1: usize) -> Result<(), String> {
    single_threaded();
    let n = square(&c, "syrk: the diagonal tile")?;
    check_cols(&p, c0, c1, "syrk")?;
    if p.nrows() != n {
        return Err(format!("syrk: the panel has {} rows, the tile {}", p.nrows(), n));
    }
    if c0 == c1 || n == 0 {
        return Ok(());
    }
    let p = p.as_standard_layout();
    let (ni, ki, lda) = (blas_int(n, "rows")?, blas_int(c1 - c0, "rank")?, blas_int(p.ncols(), "columns")?);
    let ptr = buffer(&mut c, "syrk")?;
    // SAFETY: `p` is contiguous row-major; the sub-block starts at column c0 with stride lda and
    // spans c1−c0 ≤ lda−c0 columns; `c` is contiguous n×n.
    unsafe {
        cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, ni, ki, -1.0, p.as_ptr().add(c0), lda, 1.0, ptr, ni)
    };
    Ok(())
}

/// `gemm` tile kernel: `C − P·Qᵀ` with `P = p[:, c0..c1]`, `Q = q[:, c0..c1]`.
pub fn gemm(mut c: Array2<f64>, p: &Array2<f64>, q: &Array2<f64>, c0: usize, c1: usize) -> Result<Array2<f64>, String> {
    standard(&mut c);
    gemm_in_place(c.view_mut(), p.view(), q.view(), c0, c1)?;
    Ok(c)
}

/// [`gemm`] in place on a row-major contiguous tile `c`.
pub fn gemm_in_place(
    mut c: ArrayViewMut2<f64>,
    p: ArrayView2<f64>,
    q: ArrayView2<f64>,
    c0: usize,
    c1: usize,
) -> Result<(), String> {
    single_threaded();
    check_cols(&p, c0, c1, "gemm")?;
    check_cols(&q, c0, c1, "gemm")?;
    let (m, n) = c.dim();
    if p.nrows() != m || q.nrows() != n {
        return Err(format!(
            "gemm: a {}x{} tile cannot be updated with panels of {} and {} rows",
            m,
            n,
            p.nrows(),
            q.nrows()
        ));
    }
    if c0 == c1 || m == 0 || n == 0 {
        return Ok(());
    }
    let (p, q) = (p.as_standard_layout(), q.as_standard_layout());
    let (mi, ni, ki) = (blas_int(m, "rows")?, blas_int(n, "columns")?, blas_int(c1 - c0, "rank")?);
    let (lda, ldb) = (blas_int(p.ncols(), "columns")?, blas_int(q.ncols(), "columns")?);
    let ptr = buffer(&mut c, "gemm")?;
    // SAFETY: as in `syrk`; every buffer is contiguous row-major with the leading dimension passed.
    unsafe {
        cblas_dgemm(
            CblasRowMajor,
            CblasNoTrans,
            CblasTrans,
            mi,
            ni,
            ki,
            -1.0,
            p.as_ptr().add(c0),
            lda,
            q.as_ptr().add(c0),
            ldb,
            1.0,
            ptr,
            ni,
        )
    };
    Ok(())
}

/// The seeded SPD input `A = W + n·I` with `W` Wishart-distributed like `X·Xᵀ` for an n×n
/// standard normal `X` (the Python suite's `A = X·Xᵀ + n·I`), but sampled through the Bartlett
/// decomposition: `W = R·Rᵀ` with `R` upper triangular, `R_ii = √χ²(i+1)`, `R_ij ~ N(0, 1)` for
/// j > i (the reversed-index form of Bartlett's lower factor). One LAPACK `dlauum` on every core
/// computes `R·Rᵀ` in n³/3 flops, a third of `X·Xᵀ`. Random numbers come from ChaCha8 seeded with `seed`.
pub fn generate(n: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut a = Array2::<f64>::zeros((n, n));
    for (i, mut row) in a.axis_iter_mut(Axis(0)).enumerate() {
        let chi2 = ChiSquared::new((i + 1) as f64).expect("degrees of freedom > 0");
        row[i] = chi2.sample(&mut rng).sqrt();
        for x in row.slice_mut(s![i + 1..]) {
            *x = rng.sample(StandardNormal);
        }
    }
    if n > 0 {
        let (nn, uplo, mut info) = (n as c_int, b'L' as c_char, 0 as c_int);
        // SAFETY: `a` is a contiguous n×n buffer. Seen column-major it is Rᵀ (lower), and
        // dlauum('L') overwrites that lower triangle with (Rᵀ)ᵀ·Rᵀ = R·Rᵀ, i.e. our upper triangle.
        with_threads(crate::executor::available_cores(), || unsafe {
            lapack_sys::dlauum_(&uplo, &nn, a.as_mut_ptr(), &nn, &mut info)
        });
        assert_eq!(info, 0, "dlauum rejected its arguments");
    }
    mirror_upper(&mut a);
    a.diag_mut().mapv_inplace(|d| d + n as f64);
    a
}

/// Copies the strict upper triangle onto the lower one (blocked, cache-friendly).
fn mirror_upper(a: &mut Array2<f64>) {
    const B: usize = 64;
    let n = a.nrows();
    for ib in (0..n).step_by(B) {
        for jb in (0..=ib).step_by(B) {
            for i in ib..(ib + B).min(n) {
                for j in jb..(jb + B).min(i) {
                    a[[i, j]] = a[[j, i]];
                }
            }
        }
    }
}

/// `‖L·Lᵀ − A‖_F / ‖A‖_F` over the whole matrix (one `dsyrk` on every core, n³ flops). Every
/// entry of `l`, upper triangle included, takes part.
pub fn residual_full(a: &Array2<f64>, l: &Array2<f64>) -> f64 {
    let n = a.nrows();
    assert_eq!(a.dim(), l.dim(), "A and L differ in shape");
    if n == 0 {
        return 0.0;
    }
    let l = l.as_standard_layout();
    let mut c = Array2::<f64>::zeros((n, n));
    let ni = n as c_int;
    with_threads(crate::executor::available_cores(), || {
        // SAFETY: both buffers are contiguous n×n row-major.
        unsafe {
            cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, ni, ni, 1.0, l.as_ptr(), ni, 0.0, c.as_mut_ptr(), ni)
        }
    });
    let mut r2 = 0.0;
    for i in 0..n {
        for j in 0..=i {
            let d = c[[i, j]] - a[[i, j]];
            r2 += if i == j { d * d } else { 2.0 * d * d };
        }
    }
    (r2 / frobenius2(a.view())).sqrt()
}

fn frobenius2(a: ndarray::ArrayView2<f64>) -> f64 {
    a.iter().map(|x| x * x).sum()
}

/// `‖(L·Lᵀ − A)[:, S]‖_F / ‖A[:, S]‖_F` for the columns `S` (one `dgemm`, 2n²|S| flops).
pub fn residual_columns(a: &Array2<f64>, l: &Array2<f64>, cols: &[usize]) -> f64 {
    assert_eq!(a.dim(), l.dim(), "A and L differ in shape");
    let rows = l.select(Axis(0), cols);
    let mut r = with_threads(crate::executor::available_cores(), || l.dot(&rows.t()));
    let a_s = a.select(Axis(1), cols);
    r -= &a_s;
    (frobenius2(r.view()) / frobenius2(a_s.view())).sqrt()
}

/// Columns for the sampled check: `per_block` random columns in every block column of width
/// `block`, plus the last column (whose entries involve every entry of L), sorted and distinct.
pub fn sample_columns(n: usize, block: usize, per_block: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x05EE_DC01_u64);
    let mut cols = Vec::new();
    for start in (0..n).step_by(block.max(1)) {
        let width = block.min(n - start);
        cols.extend(index::sample(&mut rng, width, per_block.clamp(1, width)).into_iter().map(|c| start + c));
    }
    if n > 0 {
        cols.push(n - 1);
    }
    cols.sort_unstable();
    cols.dedup();
    cols
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_chol(a: &Array2<f64>) -> Array2<f64> {
        let n = a.nrows();
        let mut l = Array2::<f64>::zeros((n, n));
        for j in 0..n {
            let d: f64 = a[[j, j]] - (0..j).map(|k| l[[j, k]] * l[[j, k]]).sum::<f64>();
            l[[j, j]] = d.sqrt();
            for i in j + 1..n {
                let s: f64 = a[[i, j]] - (0..j).map(|k| l[[i, k]] * l[[j, k]]).sum::<f64>();
                l[[i, j]] = s / l[[j, j]];
            }
        }
        l
    }

    fn max_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        (a - b).iter().fold(0.0f64, |m, x| m.max(x.abs()))
    }

    #[test]
    fn generated_matrix_is_symmetric_seeded_and_shifted() {
        let a = generate(12, 7);
        assert_eq!(a, a.t());
        assert_eq!(a, generate(12, 7));
        assert_ne!(a, generate(12, 8));
        assert!(a.diag().iter().all(|&d| d > 12.0));
    }

    #[test]
    fn generated_matrix_has_the_statistics_of_x_xt_plus_n_i() {
        // W = A − n·I ~ Wishart(n, I): E[W_ii] = n, E[W_ij²] = n for i ≠ j.
        let n = 400;
        let a = generate(n, 2);
        let nf = n as f64;
        let diag = a.diag().iter().map(|d| d - nf).sum::<f64>() / nf;
        let off = a.indexed_iter().filter(|((i, j), _)| i != j).map(|(_, x)| x * x).sum::<f64>() / (nf * (nf - 1.0));
        assert!((diag / nf - 1.0).abs() < 0.02, "mean diagonal {} (want {})", diag, n);
        assert!((off / nf - 1.0).abs() < 0.05, "mean squared off-diagonal {} (want {})", off, n);
    }

    #[test]
    fn dlauum_computes_r_rt() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let r = Array2::from_shape_fn((5, 5), |(i, j)| if j >= i { rng.sample::<f64, _>(StandardNormal) } else { 0.0 });
        let want = r.dot(&r.t()) + Array2::<f64>::eye(5) * 5.0;
        let mut a = r.clone();
        let (nn, uplo, mut info) = (5 as c_int, b'L' as c_char, 0 as c_int);
        unsafe { lapack_sys::dlauum_(&uplo, &nn, a.as_mut_ptr(), &nn, &mut info) };
        mirror_upper(&mut a);
        a.diag_mut().mapv_inplace(|d| d + 5.0);
        assert!(max_diff(&a, &want) < 1e-12);
    }

    #[test]
    fn whole_matrix_cholesky_matches_the_textbook_algorithm() {
        let a = generate(30, 1);
        let mut l = a.clone();
        cholesky_in_place(&mut l).unwrap();
        assert!(max_diff(&l, &naive_chol(&a)) < 1e-10);
        assert!(residual_full(&a, &l) < 1e-14);
    }

    #[test]
    fn not_positive_definite_is_reported() {
        let mut a = Array2::from_shape_vec((2, 2), vec![1.0, 2.0, 2.0, 1.0]).unwrap();
        let e = cholesky_in_place(&mut a).unwrap_err();
        assert!(e.contains("not positive definite"), "{}", e);
    }

    #[test]
    fn tile_kernels_compute_what_they_claim() {
        let a = generate(8, 3);
        let l = naive_chol(&a.slice(s![0..4, 0..4]).to_owned());
        let b = a.slice(s![4..8, 0..4]).to_owned();
        // trsm: X·Lᵀ = B
        let x = trsm(&l, b.clone()).unwrap();
        assert!(max_diff(&x.dot(&l.t()), &b) < 1e-10);
        // syrk on a column range: lower triangle of C − P[:, 1..3]·P[:, 1..3]ᵀ
        let c = a.slice(s![4..8, 4..8]).to_owned();
        let want = &c - &x.slice(s![.., 1..3]).dot(&x.slice(s![.., 1..3]).t());
        let got = syrk(c.clone(), &x, 1, 3).unwrap();
        for i in 0..4 {
            for j in 0..=i {
                assert!((got[[i, j]] - want[[i, j]]).abs() < 1e-10);
            }
        }
        // gemm: C − P·Qᵀ on a column range, and rank 0 leaves C alone
        let q = b.mapv(|v| v * 0.5);
        let want = &c - &x.slice(s![.., 0..3]).dot(&q.slice(s![.., 0..3]).t());
        assert!(max_diff(&gemm(c.clone(), &x, &q, 0, 3).unwrap(), &want) < 1e-10);
        assert_eq!(gemm(c.clone(), &x, &q, 2, 2).unwrap(), c);
        assert!(gemm(c.clone(), &x, &q, 2, 5).unwrap_err().contains("column range"));
        // potrf zeroes the upper triangle
        let f = potrf(a.slice(s![0..4, 0..4]).to_owned()).unwrap();
        assert!(max_diff(&f, &l) < 1e-12);
    }

    #[test]
    fn the_panel_is_solved_by_the_inverse_that_potrf_leaves_above_the_diagonal() {
        for (n, m) in [(1, 3), (2, 2), (7, 5), (130, 70), (300, 120)] {
            let a = generate(n + m, n as u64);
            let l = naive_chol(&a.slice(s![0..n, 0..n]).to_owned());
            let b = a.slice(s![n.., 0..n]).to_owned();
            let mut f = a.slice(s![0..n, 0..n]).to_owned();
            potrf_with_inverse_in_place(f.view_mut()).unwrap();
            // The lower triangle is L; above it, L⁻ᵀ.
            let mut low = f.clone();
            lower(low.view_mut());
            assert!(max_diff(&low, &l) < 1e-10, "n={}", n);
            let mut inv_t = Array2::<f64>::zeros((n, n));
            for i in 0..n {
                inv_t[[i, i]] = 1.0 / l[[i, i]];
                for j in i + 1..n {
                    inv_t[[i, j]] = f[[i, j]];
                }
            }
            let eye = l.t().dot(&inv_t);
            assert!(max_diff(&eye, &Array2::eye(n)) < 1e-12, "n={}: Lᵀ·(above the diagonal) is not I", n);
            // trsm by the inverse: X·Lᵀ = B, as the solve gives it.
            let mut x = b.clone();
            trsm_by_inverse_in_place(f.view(), x.view_mut()).unwrap();
            assert!(max_diff(&x.dot(&l.t()), &b) < 1e-10, "n={}", n);
            assert!(max_diff(&x, &trsm(&l, b.clone()).unwrap()) < 1e-12, "n={}", n);
            // A plain lower-triangular factor (zeros above) is solved.
            let mut y = b.clone();
            trsm_by_inverse_in_place(l.view(), y.view_mut()).unwrap();
            assert!(max_diff(&y.dot(&l.t()), &b) < 1e-10, "n={}", n);
        }
        // A tile that is not positive definite is an error, as from potrf.
        let mut bad = generate(4, 1);
        bad[[2, 2]] = -1.0;
        assert!(potrf_with_inverse_in_place(bad.view_mut()).unwrap_err().contains("not positive definite"));
    }

    #[test]
    fn kernels_accept_non_standard_layouts() {
        let a = generate(6, 4);
        let t = a.t().to_owned(); // same values (symmetric), column-major storage
        let mut f = a.clone().reversed_axes();
        assert!(!f.is_standard_layout());
        cholesky_in_place(&mut f).unwrap();
        assert!(residual_full(&t, &f) < 1e-14);
    }

    #[test]
    fn residuals_see_a_single_wrong_entry() {
        let a = generate(40, 5);
        let mut l = a.clone();
        cholesky_in_place(&mut l).unwrap();
        let cols = sample_columns(40, 10, 1, 0);
        assert!(cols.contains(&39) && cols.len() >= 4);
        assert!(residual_columns(&a, &l, &cols) < 1e-14);
        l[[3, 2]] += 1e-6; // a single entry far from the sampled block-column positions
        assert!(residual_full(&a, &l) > 1e-10);
        assert!(residual_columns(&a, &l, &cols) > 1e-10);
        let mut l2 = l.clone();
        l2[[3, 2]] -= 1e-6;
        l2[[0, 5]] = 1.0; // upper-triangle garbage also counts
        assert!(residual_full(&a, &l2) > 1e-3);
    }

    #[test]
    fn sampled_columns_cover_every_block() {
        let cols = sample_columns(100, 25, 3, 9);
        for blk in 0..4 {
            assert!(cols.iter().filter(|&&c| c / 25 == blk).count() >= 3);
        }
        assert_eq!(sample_columns(10, 5, 50, 1), (0..10).collect::<Vec<_>>());
    }
}
