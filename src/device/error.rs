//! Device-layer errors. Every driver failure becomes one of these; nothing in
//! the device layer aborts the process.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    #[error("no GPU device: {0}")]
    NoDevice(String),
    #[error("NVRTC is not available: {why}")]
    NoNvrtc { why: String },
    #[error("out of GPU memory allocating {requested} bytes on {device}: {detail}")]
    OutOfMemory { device: String, requested: usize, detail: String },
    #[error("kernel {kernel} failed to compile (options: {}):\n{log}", .options.join(" "))]
    Compile { kernel: String, options: Vec<String>, log: String },
    #[error("kernel {kernel} launch failed: {detail}")]
    Launch { kernel: String, detail: String },
    #[error("{call} failed: {detail}")]
    Driver { call: &'static str, detail: String },
    #[error("BLAS {call} failed: {detail}")]
    Blas { call: &'static str, detail: String },
    #[error(
        "the {compiler} compiler does not build for target {target} (NVRTC builds sm_XY; hipcc and clang build gfxNNN)"
    )]
    WrongCompiler { compiler: &'static str, target: String },
    #[error("unknown target '{target}': expected sm_XY (NVIDIA) or gfxNNN (AMD)")]
    UnknownTarget { target: String },
    #[error("the {what} lock was poisoned by a panic in another thread")]
    LockPoisoned { what: &'static str },
    #[error("kernel entry name {entry:?} contains a NUL byte")]
    BadEntryName { entry: String },
    #[error("copy of {device_bytes} device bytes into a host buffer of {host_bytes} bytes")]
    CopySize { device_bytes: usize, host_bytes: usize },
    #[error("the device reports {property} = {value}, which is not usable")]
    Property { property: &'static str, value: i64 },
    #[error("tensor {tensor} is not on a GPU")]
    NotOnGpu { tensor: &'static str },
    #[error("{what} {path}: {error}")]
    Scratch { what: &'static str, path: String, error: String },
}

pub type DeviceResult<T> = Result<T, DeviceError>;
