//! The one integration-test binary (`suite`): every integration test, GPU
//! tests included, so the GPU bundle ships a single test executable.
//! Without a GPU, GPU tests print `SKIP`; with `ROCMFORGE_REQUIRE_GPU=1` a
//! missing GPU fails them.

#[path = "../common/mod.rs"]
mod common;
mod differential;
mod selection;
