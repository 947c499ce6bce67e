"""NVRTC through ctypes: compiles kernels/flash/fwd.hip the way the Rust
side does (headers from kernels/include, defines, --gpu-architecture=sm_XY)
and returns the cubin and the ptxas resource report. No CUDA toolkit needed:
the nvidia-cuda-nvrtc wheel or a toolkit's libnvrtc is enough."""
import ctypes
import glob
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
KERNEL = os.path.join(ROOT, "kernels", "flash", "fwd.hip")
INCLUDES = [os.path.join(ROOT, "kernels", "include")]


def _find_nvrtc():
    cands = []
    if os.environ.get("NVRTC_LIB"):
        cands.append(os.environ["NVRTC_LIB"])
    for base in sys.path + ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"]:
        cands += sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib", "libnvrtc.so*")))
        cands += sorted(glob.glob(os.path.join(base, "libnvrtc.so*")))
    for c in cands:
        if "builtins" in c or "alt" in c:
            continue
        try:
            return ctypes.CDLL(c), c
        except OSError:
            pass
    raise RuntimeError("libnvrtc not found (set NVRTC_LIB)")


_lib, NVRTC_PATH = None, None


def lib():
    global _lib, NVRTC_PATH
    if _lib is None:
        _lib, NVRTC_PATH = _find_nvrtc()
    return _lib


def version():
    maj, mnr = ctypes.c_int(), ctypes.c_int()
    lib().nvrtcVersion(ctypes.byref(maj), ctypes.byref(mnr))
    return f"{maj.value}.{mnr.value}"


def compile_cubin(defines, arch="sm_90", warp=32, extra=()):
    """Returns (cubin bytes, log). Raises RuntimeError with the log on failure."""
    src = open(KERNEL, "rb").read()
    L = lib()
    prog = ctypes.c_void_p()
    rc = L.nvrtcCreateProgram(ctypes.byref(prog), src, b"fwd.hip", 0, None, None)
    if rc:
        raise RuntimeError(f"nvrtcCreateProgram {rc}")
    opts = [f"--gpu-architecture={arch}", "-std=c++17", f"-DRF_WARP_SIZE={warp}", "--ptxas-options=-v"]
    opts += [f"-I{d}" for d in INCLUDES]
    opts += [f"-D{k}={v}" for k, v in defines.items()]
    opts += list(extra)
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = L.nvrtcCompileProgram(prog, len(opts), arr)
    n = ctypes.c_size_t()
    L.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
    buf = ctypes.create_string_buffer(n.value)
    L.nvrtcGetProgramLog(prog, buf)
    log = buf.value.decode(errors="replace")
    if rc:
        L.nvrtcDestroyProgram(ctypes.byref(prog))
        raise RuntimeError(f"compile failed ({' '.join(opts)}):\n{log}")
    L.nvrtcGetCUBINSize(prog, ctypes.byref(n))
    cub = ctypes.create_string_buffer(n.value)
    L.nvrtcGetCUBIN(prog, cub)
    L.nvrtcDestroyProgram(ctypes.byref(prog))
    return cub.raw, log


def resources(log):
    """Registers, spill bytes and stack of the rf_flash_fwd entry from the
    ptxas report (other functions, e.g. a noinline helper, report after it)."""
    m = re.search(r"Function properties for rf_flash_fwd\n(.*?)\n(.*?)\n", log)
    part = m.group(0) if m else log
    regs = re.findall(r"Used (\d+) registers", part)
    spill = re.findall(r"(\d+) bytes spill stores", part)
    stack = re.findall(r"(\d+) bytes stack frame", part)
    return {
        "regs": int(regs[0]) if regs else -1,
        "spill_stores": int(spill[0]) if spill else -1,
        "stack": int(stack[0]) if stack else -1,
    }
