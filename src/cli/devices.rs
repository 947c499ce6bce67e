//! `rocmforge devices`: the GPUs the compiled-in drivers can open.

use super::CliError;
use std::io::Write;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Args {}

pub fn execute(_: &Args, out: &mut dyn Write) -> Result<(), CliError> {
    writeln!(out, "cpu: {} threads", rayon::current_num_threads())?;
    match rocmforge::device::gpus() {
        Ok(list) if !list.is_empty() => {
            for g in list {
                let i = g.info();
                writeln!(
                    out,
                    "{}: {:?} {} (arch {}, {:.1} GiB, warp size {}, {} multiprocessors)",
                    g.label(),
                    i.vendor,
                    i.name,
                    i.arch,
                    i.total_memory as f64 / (1u64 << 30) as f64,
                    i.warp_size,
                    i.multiprocessors
                )?;
            }
        }
        Ok(_) => writeln!(out, "no GPU: none found")?,
        Err(e) => writeln!(out, "{e}")?,
    }
    Ok(())
}
