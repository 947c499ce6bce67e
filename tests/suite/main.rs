//! One integration-test binary for everything, so the GPU bundle ships a
//! single file. GPU tests are `#[ignore = "needs a GPU"]`: `cargo test`
//! reports them as ignored, and the GPU bundle runs them with
//! `--include-ignored` under ROCMFORGE_REQUIRE_GPU=1.

#[cfg(feature = "cli")]
mod cli;
#[cfg(feature = "cli")]
mod cli_check_bench;
#[cfg(feature = "cli")]
mod cli_files;
#[cfg(feature = "cli")]
mod cli_generate_limits;
#[cfg(feature = "cli")]
mod cli_json_errors;
#[cfg(feature = "cli")]
mod cli_limits;
mod common;
mod concurrency;
mod decode;
mod differential;
mod flash;
mod gpu_device;
mod kernels_offline;
#[cfg(feature = "cli")]
mod model_cli;
mod model_errors;
mod model_fixtures;
mod model_gpu;
mod model_gpu_half;
mod model_kernels_offline;
mod model_sampling;
mod nonfinite;
mod oracle;
mod safetensors_errors;
mod selection;
