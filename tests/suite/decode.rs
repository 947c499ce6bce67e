//! `flash-decode` (split-KV decode) against the f64 oracle: every dtype,
//! head dim and mask, GQA ratios 1..8 and MQA, seq_q 1..8, KV lengths that
//! are no multiple of any tile, long KV (16k and more, many splits), a KV
//! cache read in place through strides, the paged cache (block pool, block
//! table, a batch of sequences of different lengths, unused blocks and
//! slots poisoned with NaN), invalid table entries, NaN/Inf/huge inputs,
//! and auto selection (decode here, prefill to the flash kernels). Outputs
//! are poisoned with NaN before every run. GPU tests are
//! `#[ignore = "needs a GPU"]`; the CPU tests check the typed paged call
//! and the reasons other backends give.

use crate::common::{check_output, device_for, reference, run_backend, unflatten, Inputs};
use rocmforge::backend::PagedKvRefs;
use rocmforge::tensor::SplitMix64;
use rocmforge::{
    AttentionBackend, AttentionConfig, AttentionProblem, BackendError, DType, Device, DeviceKind, HostData,
    IndexTensor, Layout, Mask, PagedKv, ProblemError, Registry, Tensor, Unsupported,
};

const NAME: &str = "flash-decode";
const HEAD_DIMS: [usize; 5] = [32, 64, 96, 128, 256];

fn backend() -> &'static dyn AttentionBackend {
    Registry::global().unwrap().get(NAME).expect("flash-decode is registered")
}

fn gpu() -> Device {
    device_for(DeviceKind::Gpu).expect("device_for always answers")
}

/// Runs `p` on flash-decode and checks it against the oracle; panics with
/// the report otherwise.
fn check(p: &AttentionProblem, inputs: &Inputs, device: &Device) {
    let reasons = Registry::reasons(backend(), p, device);
    assert!(reasons.is_empty(), "{NAME} rejects {p}: {reasons:?}");
    let expected = reference(p, inputs);
    let got = run_backend(backend(), p, inputs, device).unwrap_or_else(|e| panic!("{e}"));
    check_output(NAME, p, &got.to_f32(), &expected).unwrap_or_else(|e| panic!("{e}"));
}

fn masks(seq_kv: usize) -> [Mask; 3] {
    [Mask::None, Mask::Causal, Mask::SlidingWindow { left: seq_kv / 3, right: 2 }]
}

#[test]
#[ignore = "needs a GPU"]
fn decode_every_dtype_head_dim_and_mask() {
    let device = gpu();
    let mut seed = 1;
    for dtype in DType::ALL {
        for d in HEAD_DIMS {
            for mask in masks(1037) {
                // seq_q cycles through 1..8; 1037 keys are no multiple of a tile.
                let mut p = AttentionProblem::new(2, 1 + seed as usize % 8, 1037, 8, 2, d, dtype).with_mask(mask);
                if seed % 4 == 0 {
                    p.softcap = Some(4.0);
                    p.scale = Some(1.5);
                }
                check(&p, &Inputs::random(&p, seed), &device);
                seed += 1;
            }
        }
    }
    assert_eq!(seed, 46);
}

/// At head_dim 128, f16/bf16 calls take the wide kernel when their
/// (sequence, KV head) blocks are fewer than the multiprocessors and the
/// plain one otherwise (backends/flash_decode/split.rs): both run here.
#[test]
#[ignore = "needs a GPU"]
fn decode_both_16_bit_kernels_at_head_dim_128() {
    use rocmforge::backends::flash_decode::split::wide;
    let device = gpu();
    let Device::Gpu(g) = &device else { unreachable!() };
    let sms = g.info().multiprocessors as usize;
    let kv_heads = 8;
    let mut seed = 900;
    for dtype in [DType::BF16, DType::F16] {
        for batch in [1, sms.div_ceil(kv_heads)] {
            assert_eq!(wide(batch, kv_heads, 1, sms), batch == 1, "batch {batch}, {sms} multiprocessors");
            let p = AttentionProblem::new(batch, 1, 777, 32, kv_heads, 128, dtype).with_mask(Mask::Causal);
            check(&p, &Inputs::random(&p, seed), &device);
            seed += 1;
        }
    }
}

#[test]
#[ignore = "needs a GPU"]
fn decode_gqa_ratios_seq_q_and_lengths() {
    let device = gpu();
    let mut seed = 100;
    // Ratios 1..8 and MQA (32 query heads on one KV head: two row chunks at seq_q 1).
    let heads = [(4, 4), (4, 2), (6, 2), (8, 2), (10, 2), (12, 2), (14, 2), (16, 2), (32, 1)];
    for (hq, hkv) in heads {
        for seq_q in 1..=8 {
            for seq_kv in [1, 5, 64, 65, 777] {
                let mask = masks(seq_kv)[seed as usize % 3];
                let dtype = if seed % 5 == 0 { DType::F32 } else { DType::BF16 };
                let p = AttentionProblem::new(1 + seed as usize % 2, seq_q, seq_kv, hq, hkv, 64, dtype).with_mask(mask);
                check(&p, &Inputs::random(&p, seed), &device);
                seed += 1;
            }
        }
    }
}

#[test]
#[ignore = "needs a GPU"]
fn decode_long_kv_many_splits() {
    let device = gpu();
    let cases = [
        (1, 1, 16384, 32, 8, 128, DType::BF16, Mask::Causal),
        (1, 1, 16384, 32, 8, 128, DType::F32, Mask::None),
        (3, 4, 20000, 8, 1, 64, DType::F16, Mask::Causal),
        (2, 2, 40000, 16, 2, 128, DType::BF16, Mask::SlidingWindow { left: 9000, right: 0 }),
        (1, 8, 16500, 4, 4, 256, DType::F32, Mask::Causal),
    ];
    for (i, (b, sq, skv, hq, hkv, d, dtype, mask)) in cases.into_iter().enumerate() {
        let p = AttentionProblem::new(b, sq, skv, hq, hkv, d, dtype).with_mask(mask);
        check(&p, &Inputs::random(&p, 300 + i as u64), &device);
    }
}

/// The merge counters (one launch; the last block of a row merges the
/// splits and resets the row's counter): calls of different grids queued
/// back to back with no host wait between, then the same from four threads
/// at once. A counter left non-zero would elect no merging block, or one
/// too early, and leave a row NaN (the poison) or wrong.
#[test]
#[ignore = "needs a GPU"]
fn decode_merge_counters_reset_between_calls_and_threads() {
    let device = gpu();
    let cases = [
        AttentionProblem::new(1, 1, 8192, 32, 8, 128, DType::BF16).with_mask(Mask::Causal),
        AttentionProblem::new(3, 2, 3000, 8, 2, 64, DType::F16),
        AttentionProblem::new(1, 4, 9000, 16, 4, 128, DType::F32)
            .with_mask(Mask::SlidingWindow { left: 5000, right: 0 }),
    ];
    let cases: Vec<_> = cases
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let inputs = Inputs::random(&p, 1000 + i as u64);
            let expected = reference(&p, &inputs);
            (p, inputs, expected)
        })
        .collect();
    let up = |t: &Tensor| t.to_device(&device).unwrap();
    let on_device: Vec<_> = cases.iter().map(|(_, i, _)| (up(&i.q), up(&i.k), up(&i.v))).collect();
    let mut outs = Vec::new();
    for _round in 0..3 {
        for (i, ((p, _, _), (q, k, v))) in cases.iter().zip(&on_device).enumerate() {
            let mut out = Tensor::nan(p.out_shape(), p.dtype, &device).unwrap();
            backend().forward(p, q, k, v, &mut out).unwrap_or_else(|e| panic!("{p}: {e}"));
            outs.push((i, out));
        }
    }
    for (n, (i, out)) in outs.iter().enumerate() {
        let (p, _, expected) = &cases[*i];
        check_output(NAME, p, &out.to_f32_vec().unwrap(), expected).unwrap_or_else(|e| panic!("queued call {n}: {e}"));
    }
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (cases, device) = (&cases, device.clone());
            scope.spawn(move || {
                for c in 0..3 {
                    let (p, inputs, expected) = &cases[(t + c) % cases.len()];
                    let got = run_backend(backend(), p, inputs, &device).unwrap_or_else(|e| panic!("{e}"));
                    check_output(NAME, p, &got.to_f32(), expected)
                        .unwrap_or_else(|e| panic!("thread {t} call {c}: {e}"));
                }
            });
        }
    });
}

/// K and V as views of a cache of capacity 1.5 × length (the contiguous
/// KV cache's layout), the slots past the length NaN: read in place.
#[test]
#[ignore = "needs a GPU"]
fn decode_reads_a_strided_kv_cache_in_place() {
    let device = gpu();
    for (i, dtype) in DType::ALL.into_iter().enumerate() {
        let p = AttentionProblem::new(3, 2, 901, 8, 2, 128, dtype).with_mask(Mask::Causal);
        let inputs = Inputs::random(&p, 400 + i as u64);
        let cap = 1400;
        let to_cache = |t: &Tensor| {
            let src = t.to_f32_vec().unwrap();
            let row = p.num_kv_heads * p.head_dim;
            let mut cache = vec![f32::NAN; p.batch * cap * row];
            for b in 0..p.batch {
                let (from, to) = (b * p.seq_kv * row, b * cap * row);
                cache[to..to + p.seq_kv * row].copy_from_slice(&src[from..from + p.seq_kv * row]);
            }
            Tensor::from_f32([p.batch, cap, p.num_kv_heads, p.head_dim], dtype, &cache).unwrap().to_device(&device)
        };
        let (kc, vc) = (to_cache(&inputs.k).unwrap(), to_cache(&inputs.v).unwrap());
        let row = p.num_kv_heads * p.head_dim;
        let layout = Layout { shape: p.kv_shape(), strides: [cap * row, row, p.head_dim], offset: 0 };
        let mut strided = p.clone();
        strided.strides.k = Some(layout.strides);
        strided.strides.v = Some(layout.strides);
        let q = inputs.q.to_device(&device).unwrap();
        let mut out = Tensor::nan(p.out_shape(), dtype, &device).unwrap();
        let (k, v) = (kc.strided_view(layout).unwrap(), vc.strided_view(layout).unwrap());
        backend().forward(&strided, &q, k, v, &mut out).unwrap();
        let expected = reference(&p, &inputs);
        check_output(NAME, &p, &out.to_f32_vec().unwrap(), &expected).unwrap_or_else(|e| panic!("strided: {e}"));
    }
}

/// A batch of sequences of different lengths in a paged pool.
struct PagedCase {
    p: AttentionProblem,
    lens: Vec<usize>,
    q: Tensor,
    /// Per sequence: its dense K and V, `[1, len, kv_heads, head_dim]`.
    dense: Vec<(Tensor, Tensor)>,
    pool_k: Tensor,
    pool_v: Tensor,
    table: Vec<i32>,
}

/// Builds the pool: blocks handed out in a shuffled order, spare blocks and
/// the slots past each length NaN, table entries past a length -1 (never
/// read). `p` gives dtype, heads, mask; its batch and seq_kv come from `lens`.
fn paged_case(base: &AttentionProblem, lens: &[usize], block_size: usize, seed: u64) -> PagedCase {
    let seq_kv = lens.iter().copied().max().unwrap().max(1);
    let table_width = seq_kv.div_ceil(block_size) + 1;
    let used: usize = lens.iter().map(|l| l.div_ceil(block_size)).sum();
    let num_blocks = used + 3;
    let mut ids: Vec<usize> = (0..num_blocks).collect();
    let mut rng = SplitMix64(seed);
    for i in (1..ids.len()).rev() {
        ids.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let paged = PagedKv { block_size, num_blocks, table_width };
    let p = AttentionProblem { batch: lens.len(), seq_kv, ..base.clone() }.with_paged(paged);
    let (hkv, d) = (p.num_kv_heads, p.head_dim);
    let row = hkv * d;
    let mut pool = [vec![f32::NAN; num_blocks * block_size * row], vec![f32::NAN; num_blocks * block_size * row]];
    let mut table = vec![-1i32; lens.len() * table_width];
    let mut next = 0;
    let mut dense = Vec::new();
    for (b, &len) in lens.iter().enumerate() {
        let shape = [1, len.max(1), hkv, d];
        let kv = [
            Tensor::random(shape, p.dtype, seed * 31 + 2 * b as u64 + 1).unwrap(),
            Tensor::random(shape, p.dtype, seed * 31 + 2 * b as u64 + 2).unwrap(),
        ];
        for blk in 0..len.div_ceil(block_size) {
            table[b * table_width + blk] = ids[next] as i32;
            next += 1;
        }
        for (t, pool) in kv.iter().zip(pool.iter_mut()) {
            let src = t.to_f32_vec().unwrap();
            for j in 0..len {
                let at = (table[b * table_width + j / block_size] as usize * block_size + j % block_size) * row;
                pool[at..at + row].copy_from_slice(&src[j * row..(j + 1) * row]);
            }
        }
        let [k, v] = kv;
        dense.push((k, v));
    }
    let pool_shape = p.kv_shape();
    let pool_k = Tensor::from_f32(pool_shape, p.dtype, &pool[0]).unwrap();
    let pool_v = Tensor::from_f32(pool_shape, p.dtype, &pool[1]).unwrap();
    let q = Tensor::random(p.q_shape(), p.dtype, seed * 31).unwrap();
    PagedCase { p, lens: lens.to_vec(), q, dense, pool_k, pool_v, table }
}

/// Runs a paged case on the GPU; returns the output on the host.
fn run_paged(c: &PagedCase, table: &[i32], lens: &[i32], device: &Device) -> Vec<f32> {
    let up = |t: &Tensor| t.to_device(device).unwrap();
    let (q, k, v) = (up(&c.q), up(&c.pool_k), up(&c.pool_v));
    let table = IndexTensor::from_host(table.to_vec()).to_device(device).unwrap();
    let seq_lens = IndexTensor::from_host(lens.to_vec()).to_device(device).unwrap();
    let mut out = Tensor::nan(c.p.out_shape(), c.p.dtype, device).unwrap();
    let refs = PagedKvRefs { block_table: &table, seq_lens: &seq_lens };
    backend().forward_paged(&c.p, &q, &k, &v, refs, &mut out).unwrap_or_else(|e| panic!("{}: {e}", c.p));
    out.to_f32_vec().unwrap()
}

/// Each sequence against the oracle on its own dense K/V (length 0: zeros).
fn check_paged(c: &PagedCase, got: &[f32]) {
    let p = &c.p;
    let per_seq = p.seq_q * p.num_q_heads * p.head_dim;
    let q = c.q.to_f32_vec().unwrap();
    for (b, (&len, (k, v))) in c.lens.iter().zip(&c.dense).enumerate() {
        let slice = &got[b * per_seq..(b + 1) * per_seq];
        if len == 0 {
            assert!(slice.iter().all(|&x| x == 0.0), "sequence {b} of length 0 must be zeros on {p}");
            continue;
        }
        let pb = AttentionProblem { batch: 1, seq_kv: len, paged: None, ..p.clone() };
        let qb = Tensor::from_f32(pb.q_shape(), p.dtype, &q[b * per_seq..(b + 1) * per_seq]).unwrap();
        let inputs = Inputs { q: qb, k: k.to_device(&Device::Cpu).unwrap(), v: v.to_device(&Device::Cpu).unwrap() };
        let expected = reference(&pb, &inputs);
        check_output(NAME, &pb, slice, &expected).unwrap_or_else(|e| panic!("paged sequence {b} (len {len}): {e}"));
    }
}

fn lens_i32(c: &PagedCase) -> Vec<i32> {
    c.lens.iter().map(|&l| l as i32).collect()
}

#[test]
#[ignore = "needs a GPU"]
fn decode_paged_batches_of_different_lengths() {
    let device = gpu();
    let mut seed = 500;
    let lens = [1, 17, 300, 1000, 0, 33, 4100];
    for dtype in DType::ALL {
        for block_size in [16, 32] {
            for (seq_q, mask) in
                [(1, Mask::Causal), (3, Mask::Causal), (2, Mask::SlidingWindow { left: 200, right: 0 })]
            {
                let d = if seed % 2 == 0 { 128 } else { 64 };
                let base = AttentionProblem::new(1, seq_q, 1, 16, 4, d, dtype).with_mask(mask);
                let c = paged_case(&base, &lens, block_size, seed);
                let got = run_paged(&c, &c.table, &lens_i32(&c), &device);
                check_paged(&c, &got);
                seed += 1;
            }
        }
    }
}

/// A table entry outside the pool or a length past seq_kv makes the rows
/// that depend on it NaN: never an out-of-bounds read, never a quiet number.
#[test]
#[ignore = "needs a GPU"]
fn decode_paged_invalid_entries_give_nan_rows() {
    let device = gpu();
    // Both kernels (f32 SIMT, bf16 matrix units), both block sizes (the
    // copies are unrolled per block size), an entry past the pool and a
    // negative one.
    let cases =
        [(DType::BF16, 64, 16, 5), (DType::F32, 128, 32, -7), (DType::F32, 64, 16, 0), (DType::BF16, 128, 32, -1)];
    for (i, (dtype, d, block_size, past)) in cases.into_iter().enumerate() {
        let base = AttentionProblem::new(1, 1, 1, 8, 2, d, dtype).with_mask(Mask::Causal);
        let c = paged_case(&base, &[40, 70, 50], block_size, 900 + i as u64);
        let per_seq = c.p.seq_q * c.p.num_q_heads * c.p.head_dim;
        let mut table = c.table.clone();
        let geometry = c.p.paged.unwrap();
        // Sequence 1's second pool block (keys block_size.., inside its 70).
        table[geometry.table_width + 1] = if past >= 0 { geometry.num_blocks as i32 + past } else { past };
        let mut lens = lens_i32(&c);
        lens[2] = c.p.seq_kv as i32 + 1; // sequence 2
        let got = run_paged(&c, &table, &lens, &device);
        let what = format!("{dtype} d {d} block {block_size} entry {}", table[geometry.table_width + 1]);
        assert!(got[..per_seq].iter().all(|x| x.is_finite()), "{what}: sequence 0 is untouched");
        assert!(got[per_seq..].iter().all(|x| x.is_nan()), "{what}: sequences 1 and 2 must be NaN");
    }
}

fn poison(t: &Tensor, value: f32, count: usize, seed: u64) -> Tensor {
    let mut v = t.to_f32_vec().unwrap();
    let mut rng = SplitMix64(seed);
    for _ in 0..count {
        let i = (rng.next_u64() % v.len() as u64) as usize;
        v[i] = value;
    }
    Tensor::from_f32(t.shape(), t.dtype(), &v).unwrap()
}

/// docs/semantics.md on decode shapes (tests/suite/nonfinite.rs runs
/// seq_q 9, past this backend's limit): NaN, +-Inf and huge values in q, k
/// or v, every dtype and mask, with and without soft-cap; rows with no
/// visible key stay exact zeros.
#[test]
#[ignore = "needs a GPU"]
fn decode_nan_inf_and_huge_inputs_follow_the_reference() {
    let device = gpu();
    let mut seed = 700;
    let mut nonfinite = 0;
    for dtype in DType::ALL {
        for mask in [Mask::None, Mask::Causal, Mask::SlidingWindow { left: 2, right: 1 }] {
            for softcap in [None, Some(8.0)] {
                // seq_q 8 > seq_kv 5: causal and window leave rows with no key.
                let mut p = AttentionProblem::new(2, 8, 5, 4, 2, 32, dtype).with_mask(mask);
                p.softcap = softcap;
                let huge = if dtype == DType::F16 { 60000.0 } else { 1e30 };
                for (value, count) in [(f32::NAN, 2), (f32::INFINITY, 2), (f32::NEG_INFINITY, 2), (huge, 1)] {
                    for which in 0..3 {
                        seed += 1;
                        let base = Inputs::random(&p, seed);
                        let inputs = match which {
                            0 if value == huge && dtype == DType::BF16 => continue, // ties: docs/semantics.md
                            0 => Inputs { q: poison(&base.q, value, count, seed), ..base },
                            1 => Inputs { k: poison(&base.k, value, count, seed), ..base },
                            _ => Inputs { v: poison(&base.v, value, count, seed), ..base },
                        };
                        let expected = reference(&p, &inputs);
                        nonfinite += expected.iter().filter(|x| !x.is_finite()).count();
                        let got = run_backend(backend(), &p, &inputs, &device).unwrap().to_f32();
                        check_output(NAME, &p, &got, &expected)
                            .unwrap_or_else(|e| panic!("{value} x{count} in tensor {which} (seed {seed}): {e}"));
                        for (i, &x) in got.iter().enumerate() {
                            let [_, s, _, _] = unflatten(&p, i);
                            let (lo, hi) = p.mask.key_range(s, p.seq_q, p.seq_kv);
                            assert!(lo < hi || x == 0.0, "fully masked row holds {x} on {p}");
                        }
                    }
                }
            }
        }
    }
    assert!(nonfinite > 500, "the poison reached only {nonfinite} reference elements");
}

/// Garbage (NaN) in K and V at keys the window hides, inside tiles the
/// kernel computes, must not reach any row.
#[test]
#[ignore = "needs a GPU"]
fn decode_masked_garbage_never_leaks() {
    let device = gpu();
    for dtype in DType::ALL {
        let p = AttentionProblem::new(1, 4, 300, 8, 2, 64, dtype).with_mask(Mask::SlidingWindow { left: 37, right: 0 });
        let inputs = Inputs::random(&p, 800);
        let hide = |t: &Tensor| {
            let mut v = t.to_f32_vec().unwrap();
            let row = p.num_kv_heads * p.head_dim;
            // Keys below 300 - 4 - 37 are outside every row's window.
            for j in 0..(300 - 4 - 37) {
                v[j * row..(j + 1) * row].fill(f32::NAN);
            }
            Tensor::from_f32(t.shape(), dtype, &v).unwrap()
        };
        let inputs = Inputs { k: hide(&inputs.k), v: hide(&inputs.v), ..inputs };
        check(&p, &inputs, &device);
    }
}

/// Auto picks flash-decode for decode shapes and a flash kernel for
/// prefill, and explain says why.
#[test]
#[ignore = "needs a GPU"]
fn auto_picks_flash_decode_for_decode_and_flash_for_prefill() {
    let registry = Registry::global().unwrap();
    let config = AttentionConfig::with_backend(rocmforge::BackendChoice::Auto);
    let decode = AttentionProblem::new(16, 1, 4096, 32, 8, 128, DType::BF16).with_mask(Mask::Causal);
    let choice = registry.choose(&decode, &config).unwrap();
    assert_eq!(choice.backend.name(), NAME, "{}", choice.reason);
    let prefill = AttentionProblem { seq_q: 512, seq_kv: 512, ..decode.clone() };
    let choice = registry.choose(&prefill, &config).unwrap();
    assert_eq!(choice.backend.name(), "flash-causal", "{}", choice.reason);
    let explained = registry.explain_choice(&prefill, &config).unwrap();
    let verdict = explained.verdicts.iter().find(|(n, _)| *n == NAME).map(|(_, v)| v.clone());
    assert!(format!("{verdict:?}").contains("SeqQ { got: 512, max: 8 }"), "{verdict:?}");
}

/// The decoder on auto: decode steps pick flash-decode, and with a paged
/// cache it reads the pool in place, all sequences of a step in one call
/// whatever their lengths (prompts of 8, 5 and 8 tokens), and reproduces
/// transformers' greedy tokens. glm is the fixture with head_dim 32.
#[test]
#[ignore = "needs a GPU"]
fn decoder_decodes_through_flash_decode_on_the_paged_cache_in_place() {
    use crate::model_fixtures::{fixture_dir, reference};
    use rocmforge::model::{generate, CacheKind, Decoder, DecoderOptions, GenerateRequest, ShapeClass};
    let Device::Gpu(g) = gpu() else { unreachable!() };
    let attention = AttentionConfig {
        backend: Some(rocmforge::BackendChoice::Auto),
        device: rocmforge::DeviceChoice::Gpu(g.ordinal()),
        ..AttentionConfig::default()
    };
    let options = DecoderOptions { attention, kv_dtype: Some(DType::F32), dtype: Some(DType::F32) };
    let mut d = Decoder::load(&fixture_dir("glm"), options).unwrap();
    let r = reference("glm");
    for block_size in [16, 32] {
        let request = GenerateRequest {
            prompts: vec![r.prompt.clone(), r.prompt[..5].to_vec(), r.prompt.clone()],
            max_new: r.greedy.len(),
            cache: CacheKind::Paged { block_size },
        };
        let out = generate(&mut d, &request).unwrap();
        assert_eq!(out.tokens[0], r.greedy, "block size {block_size}");
        assert_eq!(out.tokens[2], r.greedy, "block size {block_size}");
        let decode = &out.choices[&ShapeClass::Decode];
        for (layer, c) in decode {
            assert_eq!(c.backend, NAME, "layer {layer}: {}", c.reason);
            // 15 decode steps of 3 sequences: one paged call per step.
            assert!(c.calls >= r.greedy.len() - 1 && c.in_place == c.calls, "layer {layer}: {c:?}");
        }
    }
}

// ---------------------------------------------------------------- CPU side

/// Backends that read dense K/V only reject a paged problem with a reason
/// (so explain and forced choices say why); flash-decode's only objection
/// on the CPU is the device.
#[test]
fn paged_problems_name_the_backends_that_cannot_read_them() {
    let paged = PagedKv { block_size: 16, num_blocks: 8, table_width: 4 };
    let p = AttentionProblem::new(2, 1, 64, 8, 2, 64, DType::F32).with_paged(paged);
    for b in Registry::global().unwrap().backends() {
        let reasons = Registry::reasons(b, &p, &Device::Cpu);
        if b.name() == NAME {
            assert!(reasons.iter().all(|r| matches!(r, Unsupported::Device { .. })), "{reasons:?}");
        } else {
            assert!(reasons.contains(&Unsupported::PagedKv), "{}: {reasons:?}", b.name());
            assert!(Unsupported::PagedKv.to_string().contains("paged"));
        }
    }
}

#[test]
fn paged_calls_are_checked_before_any_backend_runs() {
    let paged = PagedKv { block_size: 16, num_blocks: 4, table_width: 2 };
    let p = AttentionProblem::new(2, 1, 20, 2, 1, 8, DType::F32).with_paged(paged);
    let cpu = Registry::global().unwrap().get("cpu-reference").unwrap();
    let q = Tensor::random(p.q_shape(), p.dtype, 1).unwrap();
    let k = Tensor::random(p.kv_shape(), p.dtype, 2).unwrap();
    let v = Tensor::random(p.kv_shape(), p.dtype, 3).unwrap();
    let mut out = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu).unwrap();
    // A paged problem through the dense entry point.
    let err = cpu.forward(&p, &q, &k, &v, &mut out).unwrap_err();
    assert!(matches!(err, BackendError::Problem(ProblemError::MissingPagedRefs)), "{err}");
    // A length past seq_kv, then a table entry outside the pool.
    let table = IndexTensor::from_host(vec![0, 1, 2, 3]);
    let lens = IndexTensor::from_host(vec![20, 21]);
    let refs = PagedKvRefs { block_table: &table, seq_lens: &lens };
    let err = cpu.forward_paged(&p, &q, &k, &v, refs, &mut out).unwrap_err();
    assert!(err.to_string().contains("seq_lens[1] = 21"), "{err}");
    let table = IndexTensor::from_host(vec![0, 1, 2, 9]);
    let lens = IndexTensor::from_host(vec![20, 20]);
    let refs = PagedKvRefs { block_table: &table, seq_lens: &lens };
    let err = cpu.forward_paged(&p, &q, &k, &v, refs, &mut out).unwrap_err();
    assert!(err.to_string().contains("block_table[3] = 9"), "{err}");
    // Valid indices: the backend's own reason is what remains.
    let table = IndexTensor::from_host(vec![0, 1, 2, -1]);
    let lens = IndexTensor::from_host(vec![20, 16]);
    let refs = PagedKvRefs { block_table: &table, seq_lens: &lens };
    let err = cpu.forward_paged(&p, &q, &k, &v, refs, &mut out).unwrap_err();
    assert!(matches!(&err, BackendError::Unsupported { reasons, .. } if reasons.contains(&Unsupported::PagedKv)));
    // A dense problem given paged indices.
    let dense = AttentionProblem { paged: None, ..p.clone() };
    let dk = Tensor::random(dense.kv_shape(), p.dtype, 2).unwrap();
    let err = cpu.forward_paged(&dense, &q, &dk, &dk, refs, &mut out).unwrap_err();
    assert!(matches!(err, BackendError::Problem(ProblemError::UnexpectedPagedRefs)), "{err}");
    let _ = HostData::nan(DType::F32, 1);
}

/// On the CPU, explain says flash-decode needs a GPU for decode shapes and,
/// for prefill, also that seq_q is past its limit.
#[test]
fn explain_gives_flash_decode_s_seq_q_limit() {
    let registry = Registry::global().unwrap();
    let b = registry.get(NAME).unwrap();
    let prefill = AttentionProblem::new(1, 9, 64, 8, 2, 64, DType::BF16);
    let reasons: Vec<String> = Registry::reasons(b, &prefill, &Device::Cpu).iter().map(|r| r.to_string()).collect();
    assert!(reasons.iter().any(|r| r == "seq_q 9 exceeds 8"), "{reasons:?}");
    assert_eq!(b.capabilities().max_seq_q, Some(8));
    assert!(b.priority() > registry.get("flash-causal").unwrap().priority());
}
