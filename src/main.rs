//! The `rocmforge` binary. The command line lives in `src/cli/`, a module
//! tree of this binary only: the library's API carries no CLI types and no
//! library module depends on it.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
