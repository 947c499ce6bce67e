//! The AMX tile instructions the bf16 tile kernels use, behind a small
//! trait: `AmxTiles` issues them (`asm!`: the AMX intrinsics are unstable
//! in Rust 1.95), `TileEmu` computes the same thing in plain Rust so that
//! the kernels' addressing and blocking are tested on any CPU.
//!
//! Every tile is configured as 16 rows × 64 bytes: an accumulator holds
//! 16 × 16 f32, an A operand 16 rows × 32 bf16, a B operand 16 rows of 16
//! bf16 pairs (VNNI: row k holds `B[2k][n], B[2k+1][n]` for each n).

/// The eight tile registers and the instructions on them.
///
/// # Safety
/// Every method but `configure` needs `configure` to have run on this
/// thread since the last `release`; `load` / `store` need 16 rows of 64
/// readable / writable bytes at `ptr + r * stride`.
pub(crate) trait Tiles {
    /// Whether the code around the tiles runs with hardware FMA.
    const FMA: bool;
    /// Loads the palette (every tile 16 × 64 bytes), zeroing all tiles.
    unsafe fn configure(&mut self);
    /// Returns the tile state to its initial (unconfigured) state.
    unsafe fn release(&mut self);
    unsafe fn zero<const T: u8>(&mut self);
    unsafe fn load<const T: u8>(&mut self, ptr: *const u8, stride: usize);
    unsafe fn store<const T: u8>(&mut self, ptr: *mut u8, stride: usize);
    /// `C += A · B` over bf16 pairs into f32 (`tdpbf16ps`).
    unsafe fn dp<const C: u8, const A: u8, const B: u8>(&mut self);
}

/// The 64-byte `ldtilecfg` operand: palette 1, tiles 0..8 all 16 rows of
/// 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const fn tile_config() -> TileConfig {
    let mut c = [0u8; 64];
    c[0] = 1; // palette 1; c[1] = start_row = 0
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // colsb, little-endian u16
        c[48 + t] = 16; // rows
        t += 1;
    }
    TileConfig(c)
}

static CONFIG: TileConfig = tile_config();

/// The real tile registers. Only built where `amx::permitted()` said yes.
#[cfg(target_arch = "x86_64")]
pub(crate) struct AmxTiles;

#[cfg(target_arch = "x86_64")]
impl Tiles for AmxTiles {
    const FMA: bool = true;
    #[inline(always)]
    unsafe fn configure(&mut self) {
        // SAFETY: the caller runs this only where AMX-TILE is present and
        // the OS granted the tile data state (`amx::permitted`); CONFIG is
        // a valid 64-byte palette-1 configuration.
        unsafe { std::arch::asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, preserves_flags, readonly)) };
    }
    #[inline(always)]
    unsafe fn release(&mut self) {
        // SAFETY: as for `configure`; tilerelease touches no memory.
        unsafe { std::arch::asm!("tilerelease", options(nostack, preserves_flags)) };
    }
    #[inline(always)]
    unsafe fn zero<const T: u8>(&mut self) {
        // SAFETY: tiles are configured (trait contract).
        unsafe { std::arch::asm!("tilezero tmm{t}", t = const T, options(nostack, preserves_flags)) };
    }
    #[inline(always)]
    unsafe fn load<const T: u8>(&mut self, ptr: *const u8, stride: usize) {
        // SAFETY: tiles are configured and 16 rows of 64 bytes are readable
        // at ptr + r * stride (trait contract).
        unsafe {
            std::arch::asm!("tileloadd tmm{t}, [{p} + {s}*1]", t = const T, p = in(reg) ptr, s = in(reg) stride,
                options(nostack, preserves_flags, readonly))
        };
    }
    #[inline(always)]
    unsafe fn store<const T: u8>(&mut self, ptr: *mut u8, stride: usize) {
        // SAFETY: tiles are configured and 16 rows of 64 bytes are writable
        // at ptr + r * stride (trait contract).
        unsafe {
            std::arch::asm!("tilestored [{p} + {s}*1], tmm{t}", t = const T, p = in(reg) ptr, s = in(reg) stride,
                options(nostack, preserves_flags))
        };
    }
    #[inline(always)]
    unsafe fn dp<const C: u8, const A: u8, const B: u8>(&mut self) {
        // SAFETY: tiles are configured (trait contract); AMX-BF16 is present
        // wherever `AmxTiles` is used.
        unsafe {
            std::arch::asm!("tdpbf16ps tmm{c}, tmm{a}, tmm{b}", c = const C, a = const A, b = const B,
                options(nostack, preserves_flags))
        };
    }
}

/// Eight emulated tiles of 16 × 64 bytes.
#[cfg(test)]
pub(crate) struct TileEmu {
    t: [[[u8; 64]; 16]; 8],
    configured: bool,
}

#[cfg(test)]
impl Default for TileEmu {
    fn default() -> TileEmu {
        TileEmu { t: [[[0; 64]; 16]; 8], configured: false }
    }
}

#[cfg(test)]
impl TileEmu {
    fn f32_at(&self, t: u8, r: usize, n: usize) -> f32 {
        let b = &self.t[t as usize][r][4 * n..4 * n + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// bf16 element `i` of row `r` of tile `t`, widened.
    fn bf16_at(&self, t: u8, r: usize, i: usize) -> f32 {
        let b = &self.t[t as usize][r][2 * i..2 * i + 2];
        f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)
    }

    fn check(&self) {
        assert!(self.configured, "tile instruction before configure");
    }
}

#[cfg(test)]
impl Tiles for TileEmu {
    const FMA: bool = false;
    unsafe fn configure(&mut self) {
        *self = TileEmu { configured: true, ..TileEmu::default() };
    }
    unsafe fn release(&mut self) {
        self.configured = false;
    }
    unsafe fn zero<const T: u8>(&mut self) {
        self.check();
        self.t[T as usize] = [[0; 64]; 16];
    }
    unsafe fn load<const T: u8>(&mut self, ptr: *const u8, stride: usize) {
        self.check();
        for (r, row) in self.t[T as usize].iter_mut().enumerate() {
            // SAFETY: the caller vouches for 64 readable bytes per row.
            unsafe { std::ptr::copy_nonoverlapping(ptr.add(r * stride), row.as_mut_ptr(), 64) };
        }
    }
    unsafe fn store<const T: u8>(&mut self, ptr: *mut u8, stride: usize) {
        self.check();
        for (r, row) in self.t[T as usize].iter().enumerate() {
            // SAFETY: the caller vouches for 64 writable bytes per row.
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), ptr.add(r * stride), 64) };
        }
    }
    unsafe fn dp<const C: u8, const A: u8, const B: u8>(&mut self) {
        self.check();
        assert!(C != A && C != B && A != B, "tdpbf16ps needs three distinct tiles");
        let widen =
            |t: u8| -> [[f32; 32]; 16] { std::array::from_fn(|r| std::array::from_fn(|i| self.bf16_at(t, r, i))) };
        let (a, b) = (widen(A), widen(B));
        for (m, arow) in a.iter().enumerate() {
            for n in 0..16 {
                let mut acc = self.f32_at(C, m, n);
                for (k, brow) in b.iter().enumerate() {
                    // Each bf16 product is exact in f32.
                    acc += arow[2 * k] * brow[2 * n] + arow[2 * k + 1] * brow[2 * n + 1];
                }
                self.t[C as usize][m][4 * n..4 * n + 4].copy_from_slice(&acc.to_le_bytes());
            }
        }
    }
}
