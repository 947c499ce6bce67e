//! Device-layer errors. Every driver failure becomes one of these; nothing in
//! the device layer aborts the process.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    #[error("no GPU device: {0}")]
    NoDevice(String),
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
    #[error("{0}")]
    Invalid(String),
}

pub type DeviceResult<T> = Result<T, DeviceError>;
