//! `rocmforge backends`: the registered backends and their capabilities,
//! as a text table or as the Markdown matrix committed as docs/backends.md.

use super::CliError;
use rocmforge::backend::AttentionBackend;
use rocmforge::capabilities::Capabilities;
use rocmforge::registry::Registry;
use std::io::Write;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Args {
    /// Print the Markdown support matrix (the committed docs/backends.md).
    #[arg(long, conflicts_with = "json")]
    pub markdown: bool,
    /// Print the capabilities as one JSON document (schema in docs/cli.md).
    #[arg(long)]
    pub json: bool,
}

pub fn execute(args: &Args, out: &mut dyn Write) -> Result<(), CliError> {
    let registry = super::registry()?;
    if args.json {
        super::json::write(out, &json(registry))?;
    } else if args.markdown {
        out.write_all(markdown(registry).as_bytes())?;
    } else {
        out.write_all(table(registry).as_bytes())?;
    }
    Ok(())
}

const HEADERS: [&str; 13] = [
    "name",
    "priority",
    "device",
    "dtypes",
    "head dims",
    "max seq q/kv",
    "masks",
    "max q/kv heads",
    "soft-cap",
    "paged KV",
    "deterministic",
    "workspace",
    "description",
];

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Every backend's capabilities as data, in registry order.
pub fn json(registry: &Registry) -> serde_json::Value {
    let backends: Vec<_> = registry
        .backends()
        .map(|b| {
            let c = b.capabilities();
            serde_json::json!({
                "name": b.name(),
                "priority": b.priority(),
                "description": b.description(),
                "device": c.device.to_string(),
                "dtypes": c.dtypes.iter().map(|d| d.name()).collect::<Vec<_>>(),
                "head_dims": c.head_dims.to_string(),
                "max_seq_q": c.max_seq_q,
                "max_seq_kv": c.max_seq_kv,
                "masks": c.masks.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
                "max_group_size": c.max_group_size,
                "softcap": c.softcap,
                "paged_kv": b.accepts_paged_kv(),
                "deterministic": c.deterministic,
                "workspace": c.workspace,
                "kernels_here": kernels_here(b),
            })
        })
        .collect();
    serde_json::json!({"schema": super::json::SCHEMA, "command": "backends", "backends": backends})
}

/// One row of cells per backend, in registry order (priority, then name).
pub fn rows(registry: &Registry) -> Vec<[String; 13]> {
    registry.backends().map(row).collect()
}

fn row(b: &dyn AttentionBackend) -> [String; 13] {
    let c: Capabilities = b.capabilities();
    let max = |m: Option<usize>| m.map_or("any".to_string(), |m| m.to_string());
    [
        b.name().to_string(),
        b.priority().to_string(),
        c.device.to_string(),
        list(c.dtypes),
        c.head_dims.to_string(),
        format!("{}/{}", max(c.max_seq_q), max(c.max_seq_kv)),
        list(c.masks),
        c.max_group_size.map_or("any".to_string(), |g| format!("<= {g}")),
        yes_no(c.softcap).to_string(),
        yes_no(b.accepts_paged_kv()).to_string(),
        yes_no(c.deterministic).to_string(),
        c.workspace.to_string(),
        b.description().to_string(),
    ]
}

/// Aligned plain-text table.
pub fn table(registry: &Registry) -> String {
    let rows = rows(registry);
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(HEADERS.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(|s| s.as_str()).collect()));
    }
    out.push_str(&format!("{} backend(s) registered\n", rows.len()));
    for b in registry.backends() {
        if let Some(per_dtype) = kernels_here(b) {
            out.push_str(&format!("{} on this machine:\n", b.name()));
            for (dtype, k) in per_dtype {
                out.push_str(&format!("  {dtype}: {k}\n"));
            }
        }
    }
    out
}

/// Per dtype the backend accepts, the kernels it runs on this machine
/// (`None` when the backend does not depend on the machine).
fn kernels_here(b: &dyn AttentionBackend) -> Option<std::collections::BTreeMap<&'static str, String>> {
    let c = b.capabilities();
    let map: std::collections::BTreeMap<_, _> =
        c.dtypes.iter().filter_map(|&d| b.kernels_here(d).map(|k| (d.name(), k))).collect();
    (!map.is_empty()).then_some(map)
}

/// The support matrix as Markdown: the content of docs/backends.md. A test
/// fails when the committed file differs, so regenerate it with
/// `cargo run -- backends --markdown > docs/backends.md` after changing a backend.
pub fn markdown(registry: &Registry) -> String {
    let escape = |s: &str| s.replace('|', "\\|");
    let mut out = String::new();
    out.push_str("# Attention backends\n\n");
    out.push_str(
        "<!-- Generated by `rocmforge backends --markdown` from the backend registry; do not edit by hand. -->\n\n",
    );
    out.push_str(
        "Auto selection picks the highest-priority backend whose checks pass for the problem on the \
         chosen device. Force one with `--backend NAME` or `ROCMFORGE_ATTENTION_BACKEND=NAME` \
         (a comma-separated list is a preference order); `rocmforge explain` shows every verdict.\n\n",
    );
    out.push_str(&format!("| {} |\n", HEADERS.join(" | ")));
    out.push_str(&format!("|{}\n", "---|".repeat(HEADERS.len())));
    for r in rows(registry) {
        let cells: Vec<String> = r.iter().map(|c| escape(c)).collect();
        let mut cells = cells;
        cells[0] = format!("`{}`", cells[0]);
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out.push_str(
        "\nColumns: *max seq q/kv* is the longest query / key sequence (`any` = no limit); \
         *max q/kv heads* is the largest grouped-query ratio num_q_heads / num_kv_heads; \
         *paged KV* means K/V may come as blocks of a pool with a block table and per-sequence \
         lengths (`AttentionProblem::paged`, `forward_paged`); \
         *deterministic* means identical inputs give bit-identical outputs; *workspace* is the \
         extra memory a call needs.\n",
    );
    out
}
