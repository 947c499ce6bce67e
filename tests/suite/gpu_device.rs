//! The device layer and `gpu-unfused` on a real GPU. Every test here is
//! `#[ignore = "needs a GPU"]`: `cargo test` lists them as ignored, and the
//! GPU bundle runs them with `--include-ignored` (where no GPU is a failure).

use crate::common::{assert_matches_reference, device_for};
use rocmforge::backends::gpu_unfused::GpuUnfused;
use rocmforge::device::{DeviceError, GemmDesc, GpuDevice, LaunchConfig, Vendor};
use rocmforge::kernels::params::SoftmaxParams;
use rocmforge::kernels::{KernelFile, KernelSpec};
use rocmforge::{AttentionBackend, AttentionProblem, DType, Device, DeviceKind, Mask, Tensor};
use serial_test::serial;
use std::sync::Arc;

fn gpu() -> Option<Arc<GpuDevice>> {
    match device_for(DeviceKind::Gpu)? {
        Device::Gpu(g) => Some(g),
        Device::Cpu => None,
    }
}

#[test]
#[serial]
#[ignore = "needs a GPU"]
fn device_reports_its_own_warp_size() {
    let Some(g) = gpu() else { return };
    let info = g.info();
    match info.vendor {
        Vendor::Nvidia => assert_eq!(info.warp_size, 32),
        Vendor::Amd => assert!(info.warp_size == 32 || info.warp_size == 64),
    }
    assert!(info.total_memory > 0 && !info.name.is_empty() && !info.arch.target_id().is_empty());
    assert_eq!(info.arch.warp_size(), info.warp_size, "typed Arch and the device disagree on the warp size");
}

#[test]
#[serial]
#[ignore = "needs a GPU"]
fn upload_download_round_trip_and_poison() {
    let Some(g) = gpu() else { return };
    let t = Tensor::random([2, 3, 4, 5], DType::BF16, 11).unwrap();
    let on_gpu = t.to_device(&Device::Gpu(g.clone())).unwrap();
    assert_eq!(on_gpu.download().unwrap(), t.download().unwrap());
    let copy = on_gpu.to_device(&Device::Gpu(g.clone())).unwrap();
    assert_eq!(copy.to_f32_vec().unwrap(), t.to_f32_vec().unwrap());
    let poisoned = Tensor::nan([1, 2, 3, 4], DType::F32, &Device::Gpu(g)).unwrap();
    assert!(poisoned.to_f32_vec().unwrap().iter().all(|x| x.is_nan()));
}

#[test]
#[serial]
#[ignore = "needs a GPU"]
fn out_of_memory_is_an_error_not_an_abort() {
    let Some(g) = gpu() else { return };
    match g.alloc(1usize << 52) {
        Err(DeviceError::OutOfMemory { requested, .. }) => assert_eq!(requested, 1 << 52),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    // The device still works afterwards.
    assert!(g.alloc(1024).is_ok());
}

#[test]
#[serial]
#[ignore = "needs a GPU"]
fn compile_error_carries_the_compiler_log() {
    let Some(g) = gpu() else { return };
    const BROKEN: KernelFile = KernelFile {
        path: "tests/broken.hip",
        text: "#include \"rf/platform.h\"\nRF_KERNEL void broken_kernel(float* x) { x[0] = not_declared; }",
    };
    let spec = KernelSpec::new(BROKEN, "broken_kernel");
    match g.kernel(&spec) {
        Err(DeviceError::Compile { kernel, log, options }) => {
            assert_eq!(kernel, "broken_kernel");
            assert!(log.contains("not_declared"), "log: {log}");
            assert!(options.iter().any(|o| o.starts_with("-DRF_WARP_SIZE=")), "{options:?}");
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}

#[test]
#[serial]
#[ignore = "needs a GPU"]
fn bad_launch_is_an_error() {
    let Some(g) = gpu() else { return };
    let spec = GpuUnfused::with_workspace_cap(1 << 20).kernels().remove(0);
    let kernel = g.kernel(&spec).unwrap();
    let buf = g.alloc(4096).unwrap();
    let params = SoftmaxParams {
        scores: buf.ptr(),
        probs: buf.ptr(),
        win_left: -1,
        win_right: -1,
        seq_q: 1,
        seq_kv: 1,
        softcap: 0.0,
        reserved: 0,
    };
    // More threads per block than any GPU allows.
    let cfg = LaunchConfig { grid: (1, 1, 1), block: (4096, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: the arguments match softmax_rows and address a live buffer
    // large enough for one row of one element; the launch is rejected anyway.
    let r = unsafe { g.launch_params(&kernel, &cfg, &params) };
    assert!(matches!(r, Err(DeviceError::Launch { .. })), "{r:?}");
    g.synchronize().unwrap();
}

#[test]
#[serial]
#[ignore = "needs a GPU"]
fn events_measure_elapsed_time() {
    let Some(g) = gpu() else { return };
    let buf = g.alloc(64 << 20).unwrap();
    let (a, b) = (g.event().unwrap(), g.event().unwrap());
    a.record().unwrap();
    for _ in 0..4 {
        buf.fill_bytes(0x3c).unwrap();
    }
    b.record().unwrap();
    let ms = a.elapsed_ms(&b).unwrap();
    assert!(ms > 0.0 && ms < 10_000.0, "{ms}");
}

/// C = A^T B for column-major A (k x m), B (k x n), batch 2, against f64.
#[test]
#[serial]
#[ignore = "needs a GPU"]
fn strided_batched_gemm_matches_host() {
    let Some(g) = gpu() else { return };
    let dev = Device::Gpu(g.clone());
    let (m, n, k, batch) = (5usize, 7usize, 9usize, 2usize);
    for dtype in DType::ALL {
        let a = Tensor::random([batch, k, m, 1], dtype, 1).unwrap();
        let b = Tensor::random([batch, k, n, 1], dtype, 2).unwrap();
        let c = Tensor::nan([batch, n, m, 1], DType::F32, &dev).unwrap();
        let (ga, gb) = (a.to_device(&dev).unwrap(), b.to_device(&dev).unwrap());
        let desc = GemmDesc {
            trans_a: true,
            trans_b: false,
            m: m as i32,
            n: n as i32,
            k: k as i32,
            alpha: 1.0,
            a: ga.gpu_buffer().unwrap().ptr(),
            lda: k as i32,
            stride_a: (k * m) as i64,
            b: gb.gpu_buffer().unwrap().ptr(),
            ldb: k as i32,
            stride_b: (k * n) as i64,
            ab_type: dtype,
            beta: 0.0,
            c: c.gpu_buffer().unwrap().ptr(),
            ldc: m as i32,
            stride_c: (m * n) as i64,
            c_type: DType::F32,
            batch: batch as i32,
        };
        // SAFETY: all three matrices lie inside the buffers allocated above.
        unsafe { g.gemm(&desc).unwrap() };
        let (ha, hb, hc) = (a.to_f32_vec().unwrap(), b.to_f32_vec().unwrap(), c.to_f32_vec().unwrap());
        for bi in 0..batch {
            for j in 0..n {
                for i in 0..m {
                    let want: f64 =
                        (0..k).map(|x| ha[bi * k * m + i * k + x] as f64 * hb[bi * k * n + j * k + x] as f64).sum();
                    let got = hc[bi * m * n + j * m + i] as f64;
                    assert!((got - want).abs() < 1e-4, "{dtype} batch {bi} ({i},{j}): {got} vs {want}");
                }
            }
        }
    }
}

/// A tiny workspace cap forces every chunking mode: whole groups, pieces of
/// one group, and MHA heads in several chunks.
#[test]
#[serial]
#[ignore = "needs a GPU"]
fn unfused_chunks_agree_with_reference() {
    let Some(g) = gpu() else { return };
    let dev = Device::Gpu(g);
    let cases = [
        // (hq, hkv, heads that fit)
        (8, 8, 3),
        (8, 2, 4),
        (8, 2, 2),
        (12, 3, 1),
        (6, 1, 5),
    ];
    for (hq, hkv, fit) in cases {
        for dtype in [DType::F32, DType::BF16] {
            let p = AttentionProblem::new(2, 19, 23, hq, hkv, 16, dtype).with_mask(Mask::Causal);
            let per_head = 19 * 23 * if dtype == DType::F32 { 4 } else { 6 };
            let backend = GpuUnfused::with_workspace_cap(per_head * fit);
            assert_matches_reference(&backend, &p, &dev, 77);
        }
    }
}

#[test]
#[serial]
#[ignore = "needs a GPU"]
fn unfused_rejects_host_tensors_with_an_error() {
    let Some(_g) = gpu() else { return };
    let p = AttentionProblem::new(1, 4, 4, 2, 2, 8, DType::F32);
    let q = Tensor::random(p.q_shape(), p.dtype, 1).unwrap();
    let k = Tensor::random(p.kv_shape(), p.dtype, 2).unwrap();
    let v = Tensor::random(p.kv_shape(), p.dtype, 3).unwrap();
    let mut out = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu).unwrap();
    let err = (&GpuUnfused::with_workspace_cap(1 << 20) as &dyn AttentionBackend)
        .forward(&p, &q, &k, &v, &mut out)
        .unwrap_err();
    assert!(err.to_string().contains("runs on gpu"), "{err}");
}

/// A kernel module's exported global is readable from the host (kernels
/// export their launch shape this way); a missing name is an error.
#[test]
#[serial]
#[ignore = "needs a GPU"]
fn kernel_exports_a_global_the_host_reads() {
    let Some(g) = gpu() else { return };
    const FILE: KernelFile = KernelFile {
        path: "tests/global_probe.hip",
        text: "#include \"rf/platform.h\"\n\
               extern \"C\" __device__ const int rf_test_shape[3] = {RF_WARP_SIZE, 7, -2};\n\
               RF_KERNEL void rf_global_probe(int* x) { x[0] = rf_test_shape[1]; }\n",
    };
    let kernel = g.kernel(&KernelSpec::new(FILE, "rf_global_probe")).unwrap();
    assert_eq!(g.kernel_global_i32s(&kernel, "rf_test_shape").unwrap(), vec![g.info().warp_size as i32, 7, -2]);
}

/// Asking a module for a global it lacks is a typed error, not an abort.
/// (Provokes a driver error on purpose: skipped under the sanitizers.)
#[test]
#[serial]
#[ignore = "needs a GPU"]
fn missing_kernel_global_is_an_error() {
    let Some(g) = gpu() else { return };
    let spec = GpuUnfused::with_workspace_cap(1 << 20).kernels().remove(0);
    let kernel = g.kernel(&spec).unwrap();
    match g.kernel_global_i32s(&kernel, "rf_no_such_global") {
        Err(DeviceError::Driver { call, .. }) => assert_eq!(call, "cuModuleGetGlobal"),
        other => panic!("expected a driver error, got {other:?}"),
    }
}

/// Workspace leases are exclusive, come back to the device's pool on drop,
/// are reused, and `trim_workspaces` frees them.
#[test]
#[serial]
#[ignore = "needs a GPU"]
fn workspace_leases_are_exclusive_and_pooled() {
    let Some(g) = gpu() else { return };
    g.trim_workspaces();
    let a = g.workspace(1 << 20).unwrap();
    let b = g.workspace(1 << 20).unwrap();
    assert_ne!(a.ptr(), b.ptr(), "two live leases share memory");
    assert!(a.len_bytes() >= 1 << 20 && b.len_bytes() >= 1 << 20);
    let a_ptr = a.ptr();
    drop(a);
    drop(b);
    assert!(g.idle_workspace_bytes() >= 2 << 20);
    let c = g.workspace(1000).unwrap();
    assert!(c.ptr() == a_ptr || g.idle_workspace_bytes() >= 1 << 20, "an idle buffer was not reused");
    drop(c);
    assert!(g.trim_workspaces() >= 2 << 20);
    assert_eq!(g.idle_workspace_bytes(), 0);
}

/// The device's memory counter follows buffers and workspaces: allocating
/// raises the live bytes and the peak, freeing (and trimming idle
/// workspaces) lowers the live bytes, and a reset starts the peak afresh.
/// `rocmforge run` reports its peak from this counter.
#[test]
#[serial]
#[ignore = "needs a GPU"]
fn memory_counter_tracks_buffers_and_workspaces() {
    let Some(g) = gpu() else { return };
    g.trim_workspaces();
    let base = g.memory().live_bytes;
    g.reset_peak_memory();
    let a = g.alloc(3 << 20).unwrap();
    let lease = g.workspace(1 << 20).unwrap();
    let held = g.memory().live_bytes - base;
    assert!(held >= (4 << 20), "live grew by {held} bytes for 4 MiB");
    drop(a);
    drop(lease);
    // The lease is idle in the pool: still allocated, still counted.
    assert!(g.memory().live_bytes - base >= 1 << 20);
    let freed = g.trim_workspaces();
    assert!(freed >= 1 << 20);
    assert_eq!(g.memory().live_bytes, base, "memory still counted after free and trim");
    assert!(g.memory().peak_bytes - base >= 4 << 20, "the peak forgot the 4 MiB");
    g.reset_peak_memory();
    assert_eq!(g.memory().peak_bytes, base);
}
