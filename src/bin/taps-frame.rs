//! `taps-frame --input FILE|- --output FILE|-`: runs one task frame and exits (`taps-worker
//! run-frame`, see `taps::worker::run_frame`), for batch systems that start a process per task
//! (HyperQueue's program tasks). Its `main` names nothing but the frame runner, so the linker
//! keeps neither MPI nor the driver's harness: it starts in a fraction of `taps`'s time.

fn main() {
    taps::apps::cholesky::kernels::use_best_blas_kernels();
    taps::catalogue::install();
    let mut argv: Vec<String> = std::env::args().collect();
    argv[0] = "taps-frame".into();
    std::process::exit(taps::worker::run_frame(&argv));
}
