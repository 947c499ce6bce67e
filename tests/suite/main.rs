//! One integration-test binary for everything, so the GPU bundle ships a
//! single file. GPU tests print SKIP without a GPU and fail instead under
//! ROCMFORGE_REQUIRE_GPU=1.

#[cfg(feature = "cli")]
mod cli;
#[cfg(feature = "cli")]
mod cli_files;
#[cfg(feature = "cli")]
mod cli_limits;
mod common;
mod differential;
mod gpu_device;
mod kernels_offline;
mod selection;
