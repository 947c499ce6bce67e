//! Embeds every kernel file under `kernels/` into the binary, so nothing
//! reads kernel files at run time (and no build-time path is used after the
//! build). Generates, for `src/kernels/mod.rs`:
//! - one `KernelFile` constant per `.hip` file, named after its path
//!   (`kernels/unfused/softmax_rows.hip` → `UNFUSED_SOFTMAX_ROWS`);
//! - `ALL_FILES`, every `.hip` file;
//! - `HEADERS`, every header under `kernels/include/` by its include name
//!   (`"rf/platform.h"`), handed to NVRTC/hiprtc in memory and written out
//!   for hipcc's `-I`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("hip") | Some("h")) {
            out.push(path);
        }
    }
}

fn main() {
    let root = Path::new("kernels");
    println!("cargo:rerun-if-changed=kernels");
    let mut files = Vec::new();
    walk(root, &mut files);
    files.sort();
    let mut consts = String::new();
    let mut all = String::from("/// Every kernel file (headers excluded), by path under `kernels/`.\npub const ALL_FILES: &[KernelFile] = &[\n");
    let mut headers = String::from(
        "/// Every shared header, by include name (`rf/platform.h`).\npub const HEADERS: &[(&str, &str)] = &[\n",
    );
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let rel = path.strip_prefix(root).expect("under kernels/").to_string_lossy().replace('\\', "/");
        let abs = std::fs::canonicalize(path).expect("kernel file exists");
        if let Ok(include_name) = path.strip_prefix(root.join("include")) {
            let name = include_name.to_string_lossy().replace('\\', "/");
            writeln!(headers, "    ({name:?}, include_str!({:?})),", abs.display()).unwrap();
        } else if rel.ends_with(".hip") {
            let ident = rel.trim_end_matches(".hip").to_uppercase().replace(['/', '-', '.'], "_");
            writeln!(
                consts,
                "/// `kernels/{rel}`.\npub const {ident}: KernelFile = KernelFile {{ path: {rel:?}, text: include_str!({:?}) }};",
                abs.display()
            )
            .unwrap();
            writeln!(all, "    {ident},").unwrap();
        }
    }
    all.push_str("];\n");
    headers.push_str("];\n");
    let out = format!("{consts}\n{all}\n{headers}");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("kernel_sources.rs");
    std::fs::write(dest, out).expect("write kernel_sources.rs");
}
