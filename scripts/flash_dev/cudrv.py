"""Minimal CUDA driver API through ctypes: load a cubin, read the launch
config the module exports, launch rf_flash_fwd with the parameter struct by
value (as the Rust side does), on PyTorch's current stream."""
import ctypes

_cu = None


def cu():
    global _cu
    if _cu is None:
        _cu = ctypes.CDLL("libcuda.so.1")
    return _cu


def check(rc, what):
    if rc != 0:
        s = ctypes.c_char_p()
        cu().cuGetErrorString(rc, ctypes.byref(s))
        raise RuntimeError(f"{what}: CUDA error {rc} {s.value.decode() if s.value else ''}")


class FlashParams(ctypes.Structure):
    """Mirror of kernels/include/rf/flash_params.h (184 bytes)."""
    _fields_ = [
        ("q", ctypes.c_uint64), ("k", ctypes.c_uint64), ("v", ctypes.c_uint64), ("o", ctypes.c_uint64),
        ("lse", ctypes.c_uint64),
        ("q_batch_stride", ctypes.c_int64), ("q_seq_stride", ctypes.c_int64), ("q_head_stride", ctypes.c_int64),
        ("k_batch_stride", ctypes.c_int64), ("k_seq_stride", ctypes.c_int64), ("k_head_stride", ctypes.c_int64),
        ("v_batch_stride", ctypes.c_int64), ("v_seq_stride", ctypes.c_int64), ("v_head_stride", ctypes.c_int64),
        ("o_batch_stride", ctypes.c_int64), ("o_seq_stride", ctypes.c_int64), ("o_head_stride", ctypes.c_int64),
        ("window_left", ctypes.c_int64), ("window_right", ctypes.c_int64),
        ("batch", ctypes.c_int32), ("seq_q", ctypes.c_int32), ("seq_kv", ctypes.c_int32),
        ("heads_q", ctypes.c_int32), ("heads_kv", ctypes.c_int32),
        ("scale", ctypes.c_float), ("softcap", ctypes.c_float), ("reserved", ctypes.c_int32),
    ]


assert ctypes.sizeof(FlashParams) == 184


class Kernel:
    def __init__(self, cubin: bytes):
        mod = ctypes.c_void_p()
        check(cu().cuModuleLoadData(ctypes.byref(mod), cubin), "cuModuleLoadData")
        self.mod = mod
        fn = ctypes.c_void_p()
        check(cu().cuModuleGetFunction(ctypes.byref(fn), mod, b"rf_flash_fwd"), "cuModuleGetFunction")
        self.fn = fn
        dptr, size = ctypes.c_uint64(), ctypes.c_size_t()
        check(cu().cuModuleGetGlobal_v2(ctypes.byref(dptr), ctypes.byref(size), mod, b"rf_flash_fwd_launch"),
              "cuModuleGetGlobal(rf_flash_fwd_launch)")
        buf = (ctypes.c_int32 * 4)()
        check(cu().cuMemcpyDtoH_v2(buf, dptr, ctypes.c_size_t(16)), "cuMemcpyDtoH")
        self.block_m, self.threads, self.smem, self.block_n = list(buf)
        # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
        check(cu().cuFuncSetAttribute(fn, 8, self.smem), "cuFuncSetAttribute(max dynamic smem)")
        regs = ctypes.c_int()
        cu().cuFuncGetAttribute(ctypes.byref(regs), 4, fn)  # CU_FUNC_ATTRIBUTE_NUM_REGS
        self.regs = regs.value

    def launch(self, params: FlashParams, stream: int):
        grid = ((params.seq_q + self.block_m - 1) // self.block_m, params.heads_q, params.batch)
        args = (ctypes.c_void_p * 1)(ctypes.cast(ctypes.pointer(params), ctypes.c_void_p))
        check(cu().cuLaunchKernel(self.fn, grid[0], grid[1], grid[2], self.threads, 1, 1, self.smem,
                                  ctypes.c_void_p(stream), args, None), "cuLaunchKernel")
