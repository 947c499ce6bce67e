//! One integration-test binary for everything (the GPU bundle ships it as a
//! single file).

mod cli;
mod common;
mod gpu_device;
mod kernels_offline;
