// The few HIP runtime names kernels use, defined from clang builtins, for
// header-free offline compiles (`clang -x hip -nogpuinc -nogpulib`), where no
// HIP header exists. Only `kernels check` with clang uses this path: it
// proves the kernels compile for targets Debian's hipcc does not know
// (gfx942, gfx1100, ...). It is never used at run time (hiprtc pre-includes
// the real runtime) and nothing compiled through it is executed. Math
// functions map to hardware instructions, not the device libraries.
#pragma once

#define __host__ __attribute__((host))
#define __device__ __attribute__((device))
#define __global__ __attribute__((global))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...) __attribute__((amdgpu_flat_work_group_size(1, __VA_ARGS__)))

struct rf_dim3 { unsigned int x, y, z; };
__device__ inline rf_dim3 rf_thread_idx() {
    return {(unsigned)__builtin_amdgcn_workitem_id_x(), (unsigned)__builtin_amdgcn_workitem_id_y(),
            (unsigned)__builtin_amdgcn_workitem_id_z()};
}
__device__ inline rf_dim3 rf_block_idx() {
    return {(unsigned)__builtin_amdgcn_workgroup_id_x(), (unsigned)__builtin_amdgcn_workgroup_id_y(),
            (unsigned)__builtin_amdgcn_workgroup_id_z()};
}
__device__ inline rf_dim3 rf_block_dim() {
    return {(unsigned)__builtin_amdgcn_workgroup_size_x(), (unsigned)__builtin_amdgcn_workgroup_size_y(),
            (unsigned)__builtin_amdgcn_workgroup_size_z()};
}
__device__ inline rf_dim3 rf_grid_dim() {
    return {(unsigned)(__builtin_amdgcn_grid_size_x() / __builtin_amdgcn_workgroup_size_x()),
            (unsigned)(__builtin_amdgcn_grid_size_y() / __builtin_amdgcn_workgroup_size_y()),
            (unsigned)(__builtin_amdgcn_grid_size_z() / __builtin_amdgcn_workgroup_size_z())};
}
#define threadIdx (rf_thread_idx())
#define blockIdx (rf_block_idx())
#define blockDim (rf_block_dim())
#define gridDim (rf_grid_dim())

__device__ inline void __syncthreads() {
    __builtin_amdgcn_fence(__ATOMIC_RELEASE, "workgroup");
    __builtin_amdgcn_s_barrier();
    __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "workgroup");
}

__device__ inline float __int_as_float(int x) { return __builtin_bit_cast(float, x); }
__device__ inline float __uint_as_float(unsigned int x) { return __builtin_bit_cast(float, x); }
__device__ inline unsigned int __float_as_uint(float x) { return __builtin_bit_cast(unsigned int, x); }
__device__ inline int __float_as_int(float x) { return __builtin_bit_cast(int, x); }

__device__ inline float __shfl_xor(float v, int lane_mask, int width = RF_WARP_SIZE) {
    const int lane = (int)__builtin_amdgcn_mbcnt_hi(~0u, __builtin_amdgcn_mbcnt_lo(~0u, 0u));
    const int target = ((lane ^ lane_mask) & (width - 1)) | (lane & ~(width - 1));
    return __builtin_bit_cast(float, __builtin_amdgcn_ds_bpermute(target << 2, __builtin_bit_cast(int, v)));
}

__device__ inline int rf_shim_lane() {
    return (int)__builtin_amdgcn_mbcnt_hi(~0u, __builtin_amdgcn_mbcnt_lo(~0u, 0u));
}

__device__ inline float __shfl(float v, int src_lane, int width = RF_WARP_SIZE) {
    const int lane = rf_shim_lane();
    const int target = (src_lane & (width - 1)) | (lane & ~(width - 1));
    return __builtin_bit_cast(float, __builtin_amdgcn_ds_bpermute(target << 2, __builtin_bit_cast(int, v)));
}

__device__ inline int __shfl(int v, int src_lane, int width = RF_WARP_SIZE) {
    const int lane = rf_shim_lane();
    const int target = (src_lane & (width - 1)) | (lane & ~(width - 1));
    return __builtin_amdgcn_ds_bpermute(target << 2, v);
}

__device__ inline float exp2f(float x) { return __builtin_amdgcn_exp2f(x); }
__device__ inline float expf(float x) { return __builtin_amdgcn_exp2f(x * 1.4426950408889634f); }
__device__ inline float fmaxf(float a, float b) { return __builtin_fmaxf(a, b); }
__device__ inline float fminf(float a, float b) { return __builtin_fminf(a, b); }
__device__ inline float fabsf(float x) { return __builtin_fabsf(x); }
__device__ inline float tanhf(float x) {
    const float e = expf(-2.0f * fabsf(x));
    const float t = (1.0f - e) / (1.0f + e);
    return x < 0.0f ? -t : t;
}
