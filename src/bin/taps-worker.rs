//! `taps-worker`: runs tasks for a taps driver, or a whole MPI job (the same program as `taps`,
//! which answers to this name as `taps worker`; see `taps::worker`).

fn main() {
    let code = taps::cli::main(std::env::args().collect());
    std::process::exit(code);
}
