fn main() {
    let code = taps::cli::main(std::env::args().collect());
    std::process::exit(code);
}
