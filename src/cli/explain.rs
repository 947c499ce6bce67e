//! `rocmforge explain`: every backend's verdict for one problem.

use super::host_memory::{self, human, Item};
use super::problem_args::ShapeArgs;
use super::select::{reason_label, source_label, SelectArgs};
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
    let explanation = registry.explain_choice(&p, &args.select.config()?)?;
    let (device, verdicts) = (&explanation.device, &explanation.verdicts);
    let (choice, source) = (&explanation.choice, explanation.source);
    let tensors = [
        Item::tensor("q", p.q_shape(), p.dtype),
        Item::tensor("k", p.kv_shape(), p.dtype),
        Item::tensor("v", p.kv_shape(), p.dtype),
        Item::tensor("output", p.out_shape(), p.dtype),
    ];
    let need = tensors.iter().fold(0u128, |acc, i| acc.saturating_add(i.bytes));
    let available = host_memory::available();
    let fits = available.is_none_or(|a| need <= a as u128);
    let chosen = match &explanation.chosen {
        Ok(c) => Ok(format!("{} ({})", c.backend.name(), reason_label(&c.reason))),
        Err(e) => Err(e.to_string()),
    };

    if args.json {
        let verdicts: Vec<_> = verdicts
            .iter()
            .map(|(name, verdict)| {
                let (word, reasons) = match verdict {
                    Verdict::Chosen => ("chosen", vec![]),
                    Verdict::Eligible => ("eligible", vec![]),
                    Verdict::Rejected(r) => ("rejected", r.iter().map(|r| r.to_string()).collect()),
                };
                let kernels = registry.get(name).and_then(|b| b.kernels_here(p.dtype));
                json!({"backend": name, "verdict": word, "reasons": reasons, "kernels": kernels})
            })
            .collect();
        json::write(
            out,
            &json!({
                "schema": json::SCHEMA,
                "command": "explain",
                "problem": json::problem(&p),
                "device": json::device(device),
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
        writeln!(out, "choice:  {choice} (from {})", source_label(source))?;
        let width = verdicts.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, verdict) in verdicts {
            let (word, detail) = match verdict {
                Verdict::Chosen => ("chosen", String::new()),
                Verdict::Eligible => ("eligible", String::new()),
                Verdict::Rejected(reasons) => {
                    ("rejected", reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; "))
                }
            };
            writeln!(out, "  {name:<width$}  {word:<8}  {detail}")?;
        }
        for (name, verdict) in verdicts {
            let kernels = registry.get(name).and_then(|b| b.kernels_here(p.dtype));
            if let (Some(k), Verdict::Chosen | Verdict::Eligible) = (kernels, verdict) {
                writeln!(out, "kernels: {name} runs {} here as {k}", p.dtype)?;
            }
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
