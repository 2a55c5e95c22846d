//! `taps-worker`: runs tasks of this binary's registry for a taps driver (see `taps::worker`).

fn main() {
    let code = taps::worker::main(std::env::args().collect());
    std::process::exit(code);
}
