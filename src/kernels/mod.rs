//! Kernel sources (embedded by `build.rs`), the specializations backends
//! compile from them, and the parameter structs kernels take.
//!
//! A kernel's identity is (file, entry, defines): two files may use the same
//! entry name without colliding in any cache. Sources include the shared
//! headers of `kernels/include/` by name (`#include "rf/platform.h"`);
//! NVRTC and hiprtc receive them in memory, `hipcc` through `-I` on a
//! scratch copy. No toolkit header is ever included.

pub mod params;

use crate::device::Arch;
use crate::dtype::DType;

/// One embedded kernel file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelFile {
    /// Path under `kernels/`, e.g. `unfused/softmax_rows.hip`.
    pub path: &'static str,
    pub text: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));

/// One compilable specialization of a kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelSpec {
    pub file: KernelFile,
    /// `extern "C"` entry point.
    pub entry: &'static str,
    /// Preprocessor defines that select the specialization.
    pub defines: Vec<(String, String)>,
}

/// Cache key of a compiled kernel: (file path, entry, defines).
pub type KernelKey = (&'static str, &'static str, Vec<(String, String)>);

impl KernelSpec {
    pub fn new(file: KernelFile, entry: &'static str) -> KernelSpec {
        KernelSpec { file, entry, defines: Vec::new() }
    }

    /// Adds `-D name=value`.
    pub fn define(mut self, name: &str, value: impl ToString) -> KernelSpec {
        self.defines.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds the element-type define `name` with `dtype`'s kernel code.
    pub fn define_dtype(self, name: &str, dtype: DType) -> KernelSpec {
        self.define(name, dtype.kernel_code())
    }

    pub fn key(&self) -> KernelKey {
        (self.file.path, self.entry, self.defines.clone())
    }

    /// The translation unit's text; `#line` makes compiler messages name
    /// the file under `kernels/`.
    pub fn source(&self) -> String {
        format!("#line 1 \"{}\"\n{}", self.file.path, self.file.text)
    }

    /// Compiler options common to every compiler: the target's warp size
    /// and the specialization defines. Drivers add their own target flags.
    pub fn options(&self, arch: &Arch) -> Vec<String> {
        let mut opts = vec![format!("-DRF_WARP_SIZE={}", arch.warp_size())];
        opts.extend(self.defines.iter().map(|(k, v)| format!("-D{k}={v}")));
        opts
    }

    /// "unfused/softmax_rows.hip:softmax_rows[P_DTYPE=1]" for logs and reports.
    pub fn label(&self) -> String {
        let defs: Vec<String> = self.defines.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}:{}[{}]", self.file.path, self.entry, defs.join(","))
    }
}

/// The embedded header with include name `name`.
pub fn header(name: &str) -> Option<&'static str> {
    HEADERS.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_headers_are_embedded() {
        assert!(ALL_FILES.iter().any(|f| f.path == "unfused/softmax_rows.hip"));
        for name in ["rf/platform.h", "rf/convert.h", "rf/reduce.h", "rf/mask.h", "rf/params.h"] {
            assert!(header(name).is_some_and(|t| t.contains("#pragma once")), "{name}");
        }
        assert!(header("rf/platform.h").unwrap().contains("RF_WARP_SIZE"));
    }

    #[test]
    fn every_include_names_an_embedded_header() {
        let texts = ALL_FILES.iter().map(|f| f.text).chain(HEADERS.iter().map(|(_, t)| *t));
        for text in texts {
            for line in text.lines().filter(|l| l.trim_start().starts_with("#include")) {
                let name = line.split('"').nth(1).unwrap_or_else(|| panic!("only quoted includes: {line}"));
                assert!(header(name).is_some(), "{line}: no embedded header {name}");
            }
        }
    }

    #[test]
    fn dtype_codes_match_convert_h() {
        let convert = header("rf/convert.h").unwrap();
        for (macro_name, dtype) in [("RF_F32", DType::F32), ("RF_F16", DType::F16), ("RF_BF16", DType::BF16)] {
            let line = format!("#define {macro_name} {}", dtype.kernel_code());
            assert!(convert.contains(&line), "convert.h lacks `{line}`");
        }
    }

    #[test]
    fn same_entry_in_two_files_has_two_keys() {
        let a = KernelSpec::new(KernelFile { path: "a.hip", text: "" }, "k");
        let b = KernelSpec::new(KernelFile { path: "b.hip", text: "" }, "k");
        assert_ne!(a.key(), b.key());
    }
}
