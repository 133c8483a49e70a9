//! The `capf` binary: everything happens in the library's `cli` module.

fn main() -> std::process::ExitCode {
    capf::cli::main()
}
