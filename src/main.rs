//! The `rocmforge` binary; all logic lives in `rocmforge::cli`.

fn main() -> std::process::ExitCode {
    rocmforge::cli::main()
}
