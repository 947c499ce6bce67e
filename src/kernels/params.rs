//! Kernel parameter structs: one `#[repr(C)]` struct per kernel family,
//! passed by value as the kernel's only argument and mirrored by a C struct
//! in `kernels/include/rf/`. [`layout_probe`] turns a struct's Rust layout
//! into `static_assert`s that the offline tests compile with hipcc and
//! NVRTC, so the two sides cannot drift apart silently.

/// A parameter struct shared with kernels.
pub trait KernelParams: Copy + Send + Sync + 'static {
    /// The C struct's name.
    const C_NAME: &'static str;
    /// The header (include name) declaring it.
    const HEADER: &'static str;
    /// (field, byte offset, byte size) of every field, in order.
    fn fields() -> Vec<(&'static str, usize, usize)>;
}

/// Declares a `#[repr(C)]` parameter struct and its [`KernelParams`] impl
/// (field list from `offset_of!`), so the layout is written exactly once.
#[macro_export]
macro_rules! kernel_params {
    (
        $(#[$meta:meta])*
        pub struct $name:ident as $c_name:literal in $header:literal {
            $( $(#[$field_meta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl $crate::kernels::params::KernelParams for $name {
            const C_NAME: &'static str = $c_name;
            const HEADER: &'static str = $header;
            fn fields() -> Vec<(&'static str, usize, usize)> {
                vec![$( (stringify!($field), std::mem::offset_of!($name, $field), std::mem::size_of::<$ty>()), )*]
            }
        }
    };
}

kernel_params! {
    /// `RfStrides` of `rf/strides.h`: element strides of one `[batch, seq,
    /// heads, head_dim]` tensor (head_dim contiguous).
    pub struct KernelStrides as "RfStrides" in "rf/strides.h" {
        pub batch: i64,
        pub seq: i64,
        pub head: i64,
    }
}

kernel_params! {
    /// `RfQkvoStrides` of `rf/strides.h`: the strides of one call's four
    /// tensors, embedded in the parameter structs of the fused kernels.
    pub struct QkvoStrides as "RfQkvoStrides" in "rf/strides.h" {
        pub q: KernelStrides,
        pub k: KernelStrides,
        pub v: KernelStrides,
        pub o: KernelStrides,
    }
}

impl From<Strides> for KernelStrides {
    /// Validated strides address elements of an allocation, so each fits
    /// an `i64`.
    fn from([batch, seq, head]: Strides) -> KernelStrides {
        KernelStrides { batch: batch as i64, seq: seq as i64, head: head as i64 }
    }
}

impl QkvoStrides {
    /// The strides of Q, K, V and O, in `TensorRole::ALL` order (the
    /// checked views' layouts: `CheckedCall::kernel_strides`).
    pub fn new(strides: [Strides; 4]) -> QkvoStrides {
        let [q, k, v, o] = strides.map(KernelStrides::from);
        QkvoStrides { q, k, v, o }
    }
}

kernel_params! {
    /// `RfSoftmaxParams` of `unfused/softmax_rows.hip`.
    pub struct SoftmaxParams as "RfSoftmaxParams" in "rf/params.h" {
        /// f32 scores, rows x seq_kv.
        pub scores: u64,
        /// Probabilities in the problem's dtype (may alias `scores` for f32).
        pub probs: u64,
        /// Mask bounds, negative = unbounded (`rf/mask.h`).
        pub win_left: i64,
        pub win_right: i64,
        pub seq_q: i32,
        pub seq_kv: i32,
        /// 0 = no soft-cap.
        pub softcap: f32,
        pub reserved: i32,
    }
}

kernel_params! {
    /// `rf_flash_params` of `flash/fwd.hip`. Strides are in elements.
    pub struct FlashParams as "rf_flash_params" in "rf/flash_params.h" {
        pub q: u64,
        pub k: u64,
        pub v: u64,
        pub o: u64,
        /// f32 [batch, heads_q, seq_q] log-sum-exp, or 0 for none.
        pub lse: u64,
        pub strides: QkvoStrides,
        /// Mask bounds, negative = unbounded (`rf/mask.h`).
        pub window_left: i64,
        pub window_right: i64,
        pub batch: i32,
        pub seq_q: i32,
        pub seq_kv: i32,
        pub heads_q: i32,
        pub heads_kv: i32,
        pub scale: f32,
        /// <= 0 = no soft-cap.
        pub softcap: f32,
        pub reserved: i32,
    }
}

kernel_params! {
    /// `RfExpandKvParams` of `replicate/expand_kv.hip`.
    pub struct ExpandKvParams as "RfExpandKvParams" in "rf/params.h" {
        pub src_k: u64,
        pub src_v: u64,
        pub dst_k: u64,
        pub dst_v: u64,
        pub k_strides: KernelStrides,
        pub v_strides: KernelStrides,
        pub rows: i64,
        pub seq: i32,
        pub heads_q: i32,
        pub heads_kv: i32,
        pub head_dim: i32,
    }
}

kernel_params! {
    /// `rf_decode_params` of `decode/splitkv.hip`. Strides are in elements.
    pub struct DecodeParams as "rf_decode_params" in "rf/decode_params.h" {
        pub q: u64,
        pub k: u64,
        pub v: u64,
        pub o: u64,
        /// f32 partial outputs (more than one split), or 0.
        pub part_o: u64,
        /// f32 partial log2-sum-exp (more than one split), or 0.
        pub part_lse: u64,
        /// i32 `[batch, table_width]` block table, or 0 for dense K/V.
        pub block_table: u64,
        /// i32 `[batch]` sequence lengths, or 0 (all `seq_kv`).
        pub seq_lens: u64,
        /// With a block table, K's and V's batch stride is one pool block.
        pub strides: QkvoStrides,
        pub window_left: i64,
        pub window_right: i64,
        pub batch: i32,
        pub seq_q: i32,
        pub seq_kv: i32,
        pub heads_q: i32,
        pub heads_kv: i32,
        pub table_width: i32,
        pub block_shift: i32,
        pub num_blocks: i32,
        pub num_splits: i32,
        pub split_keys: i32,
        pub scale: f32,
        /// <= 0 = no soft-cap.
        pub softcap: f32,
        pub reserved: i32,
        /// u32 `[batch][heads_kv x row chunks]`, zero at launch (more than
        /// one split): the last block of a row merges the splits.
        pub counters: u64,
    }
}

/// A translation unit that fails to compile unless the C struct has the
/// Rust struct's size and every field's offset and size. Some NVRTC
/// versions (CUDA 13.0's) reject `__builtin_offsetof` ("type name is not
/// allowed"), so under NVRTC only the sizes are asserted; hipcc and clang
/// check every offset, and the structs are plain fixed-width C, laid out
/// the same by every compiler.
pub fn layout_probe<P: KernelParams>() -> String {
    let c = P::C_NAME;
    let mut src = format!("#include \"rf/platform.h\"\n#include \"{}\"\n", P::HEADER);
    src.push_str(&format!("static_assert(sizeof({c}) == {}, \"{c}: size differs from Rust\");\n", size_of::<P>()));
    for (field, offset, size) in P::fields() {
        src.push_str(&format!(
            "#if !defined(__CUDACC_RTC__)\n\
             static_assert(__builtin_offsetof({c}, {field}) == {offset}, \"{c}.{field}: offset differs from Rust\");\n\
             #endif\n\
             static_assert(sizeof((({c}*)0)->{field}) == {size}, \"{c}.{field}: size differs from Rust\");\n"
        ));
    }
    src.push_str("RF_KERNEL void rf_layout_probe() {}\n");
    src
}

use crate::backends::gpu_unfused::MaskedPvParams;
use crate::tensor::Strides;

/// Layout probes of every parameter struct, for the offline compile tests.
pub fn all_layout_probes() -> Vec<(&'static str, String)> {
    vec![
        (SoftmaxParams::C_NAME, layout_probe::<SoftmaxParams>()),
        (FlashParams::C_NAME, layout_probe::<FlashParams>()),
        (ExpandKvParams::C_NAME, layout_probe::<ExpandKvParams>()),
        (DecodeParams::C_NAME, layout_probe::<DecodeParams>()),
        (MaskedPvParams::C_NAME, layout_probe::<MaskedPvParams>()),
        (KernelStrides::C_NAME, layout_probe::<KernelStrides>()),
        (QkvoStrides::C_NAME, layout_probe::<QkvoStrides>()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_asserts_every_field() {
        let probe = layout_probe::<SoftmaxParams>();
        assert!(probe.contains("sizeof(RfSoftmaxParams) == 48"), "{probe}");
        assert!(probe.contains("__builtin_offsetof(RfSoftmaxParams, seq_kv) == 36"), "{probe}");
        assert_eq!(SoftmaxParams::fields().len(), 8);
    }

    #[test]
    fn embedded_strides_keep_the_flat_layout() {
        // The four tensors' strides sit where twelve i64 fields sat before.
        assert_eq!(size_of::<KernelStrides>(), 24);
        assert_eq!(size_of::<QkvoStrides>(), 96);
        assert_eq!(size_of::<FlashParams>(), 184);
        assert_eq!(size_of::<DecodeParams>(), 240); // + the merge counters (u64) at the end
        assert_eq!(std::mem::offset_of!(FlashParams, strides), 40);
        assert_eq!(std::mem::offset_of!(QkvoStrides, o) + std::mem::offset_of!(KernelStrides, head), 88);
        let probe = layout_probe::<FlashParams>();
        assert!(probe.contains("__builtin_offsetof(rf_flash_params, strides) == 40"), "{probe}");
        assert!(probe.contains("sizeof(((rf_flash_params*)0)->strides) == 96"), "{probe}");
        let s = QkvoStrides::new([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]);
        assert_eq!((s.q.batch, s.k.seq, s.v.head, s.o.batch), (1, 5, 9, 10));
    }
}
