//! Kernel sources (embedded by `build.rs`) and the specializations backends
//! compile from them. Each kernel is compiled as `prelude.h` + its file, with
//! `-D` defines, by NVRTC, hiprtc or hipcc: no include paths, no toolkit
//! headers.

include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));

/// One compilable specialization of a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSpec {
    /// File name under `kernels/`, for messages.
    pub file: &'static str,
    /// The file's text.
    pub source: &'static str,
    /// `extern "C"` entry point.
    pub entry: &'static str,
    /// Preprocessor defines that select the specialization.
    pub defines: Vec<(String, String)>,
}

impl KernelSpec {
    /// The whole translation unit: prelude, then the kernel file.
    pub fn full_source(&self) -> String {
        format!("{PRELUDE}\n#line 1 \"{}\"\n{}", self.file, self.source)
    }

    /// Compiler options common to every compiler: the device's warp size and
    /// the specialization defines. Drivers add their own target flags.
    pub fn options(&self, warp_size: u32) -> Vec<String> {
        let mut opts = vec![format!("-DRF_WARP_SIZE={warp_size}")];
        opts.extend(self.defines.iter().map(|(k, v)| format!("-D{k}={v}")));
        opts
    }

    /// "softmax_rows[P_DTYPE=1]" for logs and reports.
    pub fn label(&self) -> String {
        let defs: Vec<String> = self.defines.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}[{}]", self.entry, defs.join(","))
    }
}
