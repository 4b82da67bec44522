//! `worker`: the vislingo worker binary; the library's [`vislingo_worker::main`] does the work.

fn main() -> std::process::ExitCode {
    vislingo_worker::main()
}
