//! One integration-test binary for everything, so the GPU bundle ships a
//! single file. GPU tests print SKIP without a GPU and fail instead under
//! ROCMFORGE_REQUIRE_GPU=1.

mod cli;
mod common;
mod concurrency;
mod differential;
mod gpu_device;
mod kernels_offline;
mod model_cli;
mod model_errors;
mod model_fixtures;
mod model_gpu;
mod model_kernels_offline;
mod selection;
