//! `dispatcher`: the binary; everything lives in the library (`src/lib.rs`) so that tests can run it too.

fn main() -> std::process::ExitCode {
    vislingo_dispatcher::main()
}
