//! Pieces of the `--json` documents (`run`, `explain`, `backends`, `bench`),
//! so a problem or a device is written the same way in each. The documents
//! are described in docs/cli.md; every one carries `"schema": N`, bumped
//! when a field changes meaning or goes away (new fields may be added).

use rocmforge::device::Device;
use rocmforge::problem::AttentionProblem;
use serde_json::{json, Value};

/// Version of every `--json` document's layout.
pub const SCHEMA: u32 = 1;

pub fn problem(p: &AttentionProblem) -> Value {
    json!({
        "batch": p.batch,
        "seq_q": p.seq_q,
        "seq_kv": p.seq_kv,
        "q_heads": p.num_q_heads,
        "kv_heads": p.num_kv_heads,
        "head_dim": p.head_dim,
        "dtype": p.dtype.name(),
        "mask": p.mask.to_string(),
        "scale": p.effective_scale(),
        "softcap": p.softcap,
        "flops": p.flops(),
    })
}

pub fn device(d: &Device) -> Value {
    match d {
        Device::Cpu => {
            json!({"label": "cpu", "kind": "cpu", "name": null, "arch": null, "threads": rayon::current_num_threads()})
        }
        Device::Gpu(g) => {
            json!({"label": g.label(), "kind": "gpu", "name": g.info().name, "arch": g.info().arch.to_string(), "threads": null})
        }
    }
}

/// The document a `--json` command prints when it fails before writing
/// its own: `{"schema", "command", "error"}`.
pub fn error(command: &str, message: &str) -> Value {
    json!({"schema": SCHEMA, "command": command, "error": message})
}

/// Writes `doc` pretty-printed, with a trailing newline.
pub fn write(out: &mut dyn std::io::Write, doc: &Value) -> Result<(), super::CliError> {
    writeln!(out, "{}", serde_json::to_string_pretty(doc).map_err(std::io::Error::other)?)?;
    Ok(())
}
