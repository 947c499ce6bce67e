//! Whether this process may use the AMX tiles: the CPU has AMX-TILE and
//! AMX-BF16 (CPUID), the OS saves tile state (XCR0 bits 17 and 18), and
//! Linux granted this process the tile data state.
//!
//! Linux enables the 8 KiB tile data state per process on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, see the kernel's
//! Documentation/arch/x86/xstate.rst): the permission covers every thread
//! of the process, present and future, so it is asked for once per process
//! and the answer kept. Without it the first tile instruction kills the
//! process with SIGILL, so a refusal makes AMX unavailable (with the
//! kernel's reason) and cpu-flash falls back to the next ISA.
//! `std::is_x86_feature_detected!("amx-tile")` is unstable in Rust 1.95,
//! hence the CPUID reads here.

use std::sync::OnceLock;

/// Why AMX cannot be used here (`Ok` = it can).
pub(crate) fn status() -> Result<(), &'static str> {
    static STATUS: OnceLock<Result<(), &'static str>> = OnceLock::new();
    *STATUS.get_or_init(|| {
        cpu_has_amx()?;
        request_permission()
    })
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_amx() -> Result<(), &'static str> {
    use std::arch::x86_64::__cpuid_count;
    let max_leaf = __cpuid_count(0, 0).eax;
    if max_leaf < 7 {
        return Err("the CPU reports no CPUID leaf 7 (no AMX)");
    }
    let edx = __cpuid_count(7, 0).edx;
    let (amx_bf16, amx_tile) = (edx >> 22 & 1 == 1, edx >> 24 & 1 == 1);
    if !(amx_bf16 && amx_tile) {
        return Err("the CPU lacks AMX-TILE/AMX-BF16");
    }
    if !is_x86_feature_detected!("avx512bf16") || !is_x86_feature_detected!("avx512bw") {
        return Err("the CPU has AMX but lacks AVX512-BF16/BW (cpu-flash's AMX path needs both)");
    }
    let osxsave = __cpuid_count(1, 0).ecx >> 27 & 1 == 1;
    if !osxsave {
        return Err("the OS has not enabled XSAVE (no tile state)");
    }
    // SAFETY: OSXSAVE is set, so XGETBV is enabled.
    let xcr0 = unsafe { xcr0() };
    if xcr0 & (0b11 << 17) != 0b11 << 17 {
        return Err("the OS does not manage AMX tile state (XCR0 bits 17/18 clear)");
    }
    Ok(())
}

/// # Safety
/// CPUID.1:ECX.OSXSAVE must be set.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    // SAFETY: the caller checked OSXSAVE; the feature is enabled here.
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_amx() -> Result<(), &'static str> {
    Err("not an x86-64 CPU")
}

/// Asks Linux for the tile data state. `libc` is a dependency for this
/// one call: std has no `syscall`, and glibc has no `arch_prctl` wrapper.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn request_permission() -> Result<(), &'static str> {
    const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, feature) reads no memory; it
    // only changes this process's permitted xstate features.
    let rc = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) };
    if rc != 0 {
        return Err(match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINVAL) => "Linux refused the AMX tile state (arch_prctl: EINVAL, kernel older than 5.16?)",
            Some(libc::EPERM) => "Linux refused the AMX tile state (arch_prctl: EPERM)",
            Some(libc::ENOSYS) => "arch_prctl is not available (ENOSYS)",
            _ => "Linux refused the AMX tile state (arch_prctl failed)",
        });
    }
    let mut bits: u64 = 0;
    // SAFETY: ARCH_GET_XCOMP_PERM writes one u64 at the pointer, which is
    // a live local.
    let rc = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &mut bits as *mut u64) };
    if rc != 0 || bits >> XFEATURE_XTILEDATA & 1 == 0 {
        return Err("Linux accepted the AMX request but does not report the tile state as permitted");
    }
    Ok(())
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn request_permission() -> Result<(), &'static str> {
    Err("cpu-flash asks for AMX tile state only on Linux")
}
