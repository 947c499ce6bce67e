//! Embeds every kernel source under `kernels/` into the binary, so nothing
//! reads kernel files at run time. Adding `kernels/foo.hip` makes
//! `kernels::FOO` and an entry in `kernels::ALL_SOURCES` appear.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new("kernels");
    println!("cargo:rerun-if-changed=kernels");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("kernels/ directory is part of the crate")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("hip") | Some("h")))
        .collect();
    files.sort();
    let mut out = String::new();
    let mut all = String::from(
        "/// Every kernel file (not the prelude), by file name.\npub const ALL_SOURCES: &[(&str, &str)] = &[\n",
    );
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let stem = path.file_stem().unwrap().to_string_lossy().to_uppercase().replace(['-', '.'], "_");
        let abs = std::fs::canonicalize(path).unwrap();
        writeln!(out, "/// Text of `kernels/{file}`.\npub const {stem}: &str = include_str!({:?});", abs.display())
            .unwrap();
        if file.ends_with(".hip") {
            writeln!(all, "    ({file:?}, {stem}),").unwrap();
        }
    }
    all.push_str("];\n");
    out.push_str(&all);
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("kernel_sources.rs");
    std::fs::write(dest, out).unwrap();
}
