//! Backend families, one file each. Each file registers its backend with
//! `inventory::submit!`; adding a backend is a new file plus one `mod` line.

pub mod cpu_flash;
pub mod cpu_reference;
pub mod flash_decode;
pub mod gpu_flash;
pub mod gpu_unfused;
pub mod mqa_replicate;
