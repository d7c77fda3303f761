//! Thin shim: everything lives in the library so that tests drive the same code.

fn main() -> std::process::ExitCode {
    mpe_ledger::cli::main()
}
