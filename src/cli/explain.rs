//! `rocmforge explain`: every backend's verdict for one problem.

use super::problem_args::ShapeArgs;
use super::{source_label, CliError, SelectArgs};
use crate::capabilities::Unsupported;
use crate::registry::Verdict;
use std::io::Write;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Args {
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn execute(args: &Args, out: &mut dyn Write) -> Result<(), CliError> {
    let registry = super::registry()?;
    let p = args.shape.problem();
    let resolved = args.select.resolve()?;
    let config = args.select.config()?;
    // Explain on the device that selection would use (the first candidate
    // with a runnable backend, else the most preferred one).
    let candidates = args.select.candidates(registry, &resolved.choice)?;
    let device = candidates
        .iter()
        .find(|d| registry.select_choice(&p, d, &resolved.choice, resolved.source).is_ok())
        .or(candidates.first())
        .cloned()
        .unwrap_or(crate::device::Device::Cpu);
    let (verdicts, chosen) = registry.explain(&p, &device, &config);
    writeln!(out, "problem: {p}")?;
    writeln!(out, "device:  {}", device.label())?;
    writeln!(out, "choice:  {} (from {})", resolved.choice, source_label(resolved.source))?;
    let width = verdicts.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, verdict) in &verdicts {
        let (word, detail) = match verdict {
            Verdict::Chosen => ("chosen", String::new()),
            Verdict::Eligible => ("eligible", String::new()),
            Verdict::Rejected(reasons) => ("rejected", join(reasons)),
        };
        writeln!(out, "  {name:<width$}  {word:<8}  {detail}")?;
    }
    match chosen {
        Ok(text) => {
            writeln!(out, "selected: {}", super::cli_wording(&text))?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn join(reasons: &[Unsupported]) -> String {
    reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; ")
}
