//! The `rocmforge` command line: one file per command, declared from
//! `src/main.rs` only. Everything reusable (comparison with the oracle,
//! timing statistics, the shape syntax, selection) lives in the library.

mod backends;
mod bench;
mod devices;
mod explain;
mod generate;
mod host_memory;
mod inputs;
mod json;
mod kernels;
mod problem_args;
mod run;
mod select;
mod timed;

use clap::{Parser, Subcommand};
use rocmforge::backend::BackendError;
use rocmforge::device::DeviceError;
use rocmforge::io::IoError;
use rocmforge::problem::ProblemError;
use rocmforge::registry::{Registry, SelectError};
use rocmforge::tensor::TensorError;
use std::io::Write;
use std::process::ExitCode;

/// Scaled-dot-product attention through a registry of pluggable backends.
///
/// With no command, runs a Llama-like problem (batch 1, 32 query heads,
/// 8 KV heads, seq 1024, head_dim 128, causal, f32) on the best available
/// device and checks it against cpu-reference: the same as `rocmforge run --check`.
///
/// Tensors are [batch, seq, heads, head_dim] everywhere (PyTorch's SDPA uses
/// [batch, heads, seq, head_dim]: transpose(1, 2) first). CPU backends use
/// every core; set --threads (run, bench) or RAYON_NUM_THREADS to change that.
#[derive(Parser, Debug)]
#[command(name = "rocmforge", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List registered backends and their capabilities.
    Backends(backends::Args),
    /// Show every backend's verdict (chosen / eligible / rejected) for a problem.
    Explain(explain::Args),
    /// Run one attention problem and report the backend, the time and the error.
    Run(run::Args),
    /// Time backends on one or more shapes.
    Bench(bench::Args),
    /// List GPUs, or say why there is none.
    Devices(devices::Args),
    /// Kernel tools: list every kernel specialization, or compile them for a target.
    Kernels(kernels::Args),
    /// Token generation (greedy, or sampled with --temperature) with a Hugging Face model directory (Llama, Mistral, Qwen2, GLM).
    Generate(generate::Args),
}

/// Everything a command can fail with; `main` prints it as `error: ...`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("invalid problem: {0}")]
    Problem(#[from] ProblemError),
    #[error(transparent)]
    HostMemory(#[from] host_memory::HostMemoryError),
    #[error("check against cpu-reference failed: {0}")]
    CheckFailed(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Model(#[from] rocmforge::model::ModelError),
}

/// Entry point of the binary: parses arguments, runs the command, and turns
/// any error into one `error: ...` line on stderr and a non-zero exit.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    let json_command = cli.command.as_ref().and_then(Command::json_name);
    let stdout = std::io::stdout();
    let mut out = CountingWriter { inner: stdout.lock(), written: 0 };
    let result = check_thread_env().and_then(|()| run_command(cli, &mut out));
    let _ = out.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `rocmforge backends | head` closes the pipe early: not an error.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let message = shorten_lines(&e.to_string());
            eprintln!("error: {message}");
            // A script that asked for JSON gets a document either way,
            // unless the command already wrote its own (with its error).
            if let (Some(command), 0) = (json_command, out.written) {
                let _ = json::write(&mut out, &json::error(command, &message));
                let _ = out.flush();
            }
            ExitCode::FAILURE
        }
    }
}

fn run_command(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    match cli.command {
        None => run::execute(&run::Args::default_main(), out),
        Some(Command::Backends(a)) => backends::execute(&a, out),
        Some(Command::Explain(a)) => explain::execute(&a, out),
        Some(Command::Run(a)) => run::execute(&a, out),
        Some(Command::Bench(a)) => bench::execute(&a, out),
        Some(Command::Devices(a)) => devices::execute(&a, out),
        Some(Command::Kernels(a)) => kernels::execute(&a, out),
        Some(Command::Generate(a)) => generate::execute(&a, out),
    }
}

impl Command {
    /// The command's name when it was asked for `--json`.
    fn json_name(&self) -> Option<&'static str> {
        match self {
            Command::Backends(a) => a.json.then_some("backends"),
            Command::Explain(a) => a.json.then_some("explain"),
            Command::Run(a) => a.json.then_some("run"),
            Command::Bench(a) => a.json.then_some("bench"),
            Command::Generate(a) => a.json.then_some("generate"),
            Command::Devices(_) | Command::Kernels(_) => None,
        }
    }
}

/// The subcommands that take `--json`, for usage errors (which happen
/// before the arguments are parsed).
const JSON_COMMANDS: [&str; 5] = ["backends", "explain", "run", "bench", "generate"];

/// stdout, counting what went through it.
struct CountingWriter<W: Write> {
    inner: W,
    written: usize,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The largest `RAYON_NUM_THREADS` (and `--threads`) accepted.
const MAX_THREADS: usize = 1024;

/// `RAYON_NUM_THREADS` as rayon would read it, checked first: rayon
/// ignores junk silently and would spawn any number of threads.
fn check_thread_env() -> Result<(), CliError> {
    match std::env::var_os("RAYON_NUM_THREADS") {
        None => Ok(()),
        Some(v) => thread_env_problem(&v.to_string_lossy()).map_or(Ok(()), |why| Err(CliError::Usage(why))),
    }
}

/// Why a `RAYON_NUM_THREADS` value is refused, if it is.
fn thread_env_problem(value: &str) -> Option<String> {
    match value.trim().parse::<usize>() {
        Ok(n) if n <= MAX_THREADS => None,
        _ => Some(format!(
            "RAYON_NUM_THREADS={}: expected a whole number of threads from 1 to {MAX_THREADS} \
             (0 or unset: one per core)",
            crate::cli::shorten_lines(value)
        )),
    }
}

/// Help and version go to stdout with exit 0; usage errors become one line.
fn clap_exit(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        // `rocmforge --help > /dev/full` must not claim success.
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            match e.print().and_then(|()| std::io::stdout().flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            // The first paragraph, joined into one line (a missing-argument
            // error lists the arguments on the lines below its first).
            let text = e.to_string();
            let first: Vec<&str> = text
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let first = if first.is_empty() { "error: invalid arguments".to_string() } else { first.join(" ") };
            let first = shorten_lines(&first);
            let message = first.strip_prefix("error:").map(str::trim_start).unwrap_or(&first);
            eprintln!("error: {message} (see --help)");
            if let Some(command) = json_command_in_raw_args() {
                let _ = json::write(&mut std::io::stdout(), &json::error(command, &format!("{message} (see --help)")));
            }
            ExitCode::from(2)
        }
    }
}

/// The subcommand of a command line that failed to parse, when it takes
/// `--json` and `--json` is among the arguments.
fn json_command_in_raw_args() -> Option<&'static str> {
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    if !args.iter().any(|a| a == "--json") {
        return None;
    }
    let first = args.iter().find(|a| !a.starts_with('-'))?;
    JSON_COMMANDS.iter().find(|c| *c == first).copied()
}

/// Longest word of an error message, and longest line: what the user typed
/// is echoed in errors (by clap and by the library), and a megabyte argument
/// must not become a megabyte message.
const WORD_MAX: usize = 80;
const LINE_MAX: usize = 2000;

/// `text` with every word longer than `WORD_MAX` and every line longer than
/// `LINE_MAX` cut, each saying how long it was. Words are cut, rather than
/// lines, so the flag named after a long value survives.
pub fn shorten_lines(text: &str) -> String {
    // Control characters the user typed (an escape sequence, a carriage
    // return) are shown escaped, never sent to the terminal.
    let text: String = text
        .chars()
        .map(|c| if c.is_control() && c != '\n' && c != '\t' { c.escape_default().collect() } else { c.to_string() })
        .collect();
    let cut = |s: &str, max: usize| match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((at, _)) => format!("{}... [{} bytes in all]", &s[..at], s.len()),
    };
    text.lines()
        .map(|line| cut(&line.split(' ').map(|w| cut(w, WORD_MAX)).collect::<Vec<_>>().join(" "), LINE_MAX))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The global registry, or the error that prevented building it.
pub fn registry() -> Result<&'static Registry, CliError> {
    Ok(Registry::global()?)
}

/// `--threads N`: the size of the CPU thread pool (CPU backends and the
/// `--check` reference). Without it rayon reads RAYON_NUM_THREADS, else uses
/// one thread per core.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ThreadArgs {
    /// CPU threads for CPU backends and --check [default: RAYON_NUM_THREADS, else one per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

impl ThreadArgs {
    /// Sizes the global pool; must run before anything else uses rayon.
    pub fn apply(&self) -> Result<(), CliError> {
        if let Some(n) = self.threads {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n as usize)
                .build_global()
                .map_err(|e| CliError::Usage(format!("--threads {n}: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(shorten_lines("a\x1b[31mred\rb\nc"), "a\\u{1b}[31mred\\rb\nc");
    }

    #[test]
    fn thread_variable_is_checked() {
        for ok in ["1", " 8 ", "0", "1024"] {
            assert_eq!(thread_env_problem(ok), None, "{ok}");
        }
        for bad in ["abc", "-1", "", "1025", "100000", "2.5"] {
            let why = thread_env_problem(bad).unwrap_or_default();
            assert!(why.starts_with("RAYON_NUM_THREADS=") && why.contains("1 to 1024"), "{bad}: {why}");
        }
    }

    #[test]
    fn long_lines_are_cut() {
        assert_eq!(shorten_lines("short\nlines"), "short\nlines");
        let long = format!("invalid value '{}' for '--mask'", "x".repeat(100_000));
        let cut = shorten_lines(&long);
        assert!(cut.len() < 200 && cut.contains("[100002 bytes in all] for '--mask'"), "{cut}");
    }
}
