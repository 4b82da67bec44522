//! The `dispatcher` binary, built inside the fleet tests' package so that its tests can start it as a process.

fn main() -> std::process::ExitCode {
    vislingo_dispatcher::main()
}
