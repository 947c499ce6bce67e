//! `rocmforge explain`: every backend's verdict for one problem.

use super::host_memory::{self, human, Item};
use super::problem_args::ShapeArgs;
use super::select::{cli_wording, source_label, SelectArgs};
use super::{json, CliError};
use rocmforge::registry::Verdict;
use serde_json::json;
use std::io::Write;

#[derive(clap::Args, Debug, Clone, Default)]
#[command(after_help = "Selection decides whether a backend can run the problem; it does not \
    allocate. The memory line says how much host memory the tensors need and whether this \
    machine has it: allocating is the caller's job (`rocmforge run` checks it first).\n\
    --json prints one JSON document (schema in docs/cli.md).")]
pub struct Args {
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Print one JSON document instead of the text report.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(args: &Args, out: &mut dyn Write) -> Result<(), CliError> {
    let registry = super::registry()?;
    let p = args.shape.problem();
    // An invalid problem is one error, not the same reason once per backend.
    p.validate()?;
    let (choice, source) = args.select.resolve()?;
    let config = args.select.config()?;
    // Explain on the device that selection would use (the first candidate
    // with a runnable backend, else the most preferred one).
    let (candidates, gpu_missing) = args.select.candidates(registry, &choice)?;
    let device = candidates
        .iter()
        .find(|d| registry.select_choice(&p, d, &choice, source).is_ok())
        .or(candidates.first())
        .cloned()
        .unwrap_or(rocmforge::Device::Cpu);
    let (verdicts, chosen) = registry.explain(&p, &device, &config);
    let tensors = [
        Item::tensor("q", p.q_shape(), p.dtype),
        Item::tensor("k", p.kv_shape(), p.dtype),
        Item::tensor("v", p.kv_shape(), p.dtype),
        Item::tensor("output", p.out_shape(), p.dtype),
    ];
    let need = tensors.iter().fold(0u128, |acc, i| acc.saturating_add(i.bytes));
    let available = host_memory::available();
    let fits = available.is_none_or(|a| need <= a as u128);
    let chosen = chosen.map(|text| cli_wording(&text)).map_err(|e| cli_wording(&e.to_string()));

    if args.json {
        let verdicts: Vec<_> = verdicts
            .iter()
            .map(|(name, verdict)| {
                let (word, reasons) = match verdict {
                    Verdict::Chosen => ("chosen", vec![]),
                    Verdict::Eligible => ("eligible", vec![]),
                    Verdict::Rejected(r) => ("rejected", r.iter().map(|r| r.to_string()).collect()),
                };
                json!({"backend": name, "verdict": word, "reasons": reasons})
            })
            .collect();
        json::write(
            out,
            &json!({
                "schema": json::SCHEMA,
                "command": "explain",
                "problem": json::problem(&p),
                "device": json::device(&device),
                "gpu_missing": gpu_missing,
                "choice": {"value": choice.to_string(), "source": source_label(source)},
                "verdicts": verdicts,
                "selected": chosen.as_ref().ok(),
                "error": chosen.as_ref().err(),
                "host_memory": {"tensors_bytes": need as f64, "available_bytes": available, "fits": fits},
            }),
        )?;
    } else {
        writeln!(out, "problem: {p}")?;
        writeln!(out, "device:  {}", device.label())?;
        if let Some(why) = &gpu_missing {
            writeln!(out, "note:    no GPU for the requested GPU backend: {why}")?;
        }
        writeln!(out, "choice:  {choice} (from {})", source_label(source))?;
        let width = verdicts.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, verdict) in &verdicts {
            let (word, detail) = match verdict {
                Verdict::Chosen => ("chosen", String::new()),
                Verdict::Eligible => ("eligible", String::new()),
                Verdict::Rejected(reasons) => {
                    ("rejected", reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; "))
                }
            };
            writeln!(out, "  {name:<width$}  {word:<8}  {detail}")?;
        }
        let verdict = match available {
            Some(a) if !fits => format!("more than the {} available here", human(a as u128)),
            Some(a) => format!("{} available", human(a as u128)),
            None => "available memory unknown".to_string(),
        };
        writeln!(
            out,
            "memory:  q, k, v and output need {} of host memory ({verdict}); allocation is the caller's",
            human(need)
        )?;
        if let Ok(text) = &chosen {
            writeln!(out, "selected: {text}")?;
        }
    }
    chosen.map(|_| ()).map_err(CliError::Usage)
}
