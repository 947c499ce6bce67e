use super::*;
use crate::tensor::SplitMix64;
use std::collections::HashMap;

/// Appends host rows `k`, `v` (`[n, kv_heads × head_dim]`) of one sequence.
fn put<C: KvCache + ?Sized>(c: &mut C, layer: usize, seq: SeqId, k: &[f32], v: &[f32]) -> Result<(), KvCacheError> {
    let row = c.shape().row();
    let (km, vm) = (
        Matrix::from_host(k.len() / row, row, k.to_vec()).unwrap(),
        Matrix::from_host(v.len() / row, row, v.to_vec()).unwrap(),
    );
    c.append(layer, &[AppendRows { seq, first_row: 0, len: k.len() / row }], &km, &vm)
}

/// Gathers to host data.
fn get<C: KvCache + ?Sized>(
    c: &C,
    layer: usize,
    seqs: &[SeqId],
    len: usize,
) -> Result<(HostData, HostData), KvCacheError> {
    let (k, v) = c.gather(layer, seqs, len)?;
    Ok((k.download().unwrap(), v.download().unwrap()))
}

const SHAPE: CacheShape = CacheShape { num_layers: 3, num_kv_heads: 2, head_dim: 4, dtype: DType::F32 };

fn caches(shape: CacheShape) -> Vec<Box<dyn KvCache>> {
    vec![
        Box::new(ContiguousCache::new(shape, 4, 80).unwrap()),
        Box::new(PagedCache::new(shape, 16, 20).unwrap()),
        Box::new(PagedCache::new(shape, 32, 10).unwrap()),
    ]
}

/// What every cache must agree with: per (sequence, layer), the rows written.
#[derive(Default)]
struct Model {
    k: HashMap<(SeqId, usize), Vec<f32>>,
    v: HashMap<(SeqId, usize), Vec<f32>>,
}

fn rows(n: usize, rng: &mut SplitMix64) -> Vec<f32> {
    (0..n * SHAPE.row()).map(|_| rng.next_unit() * 2.0 - 1.0).collect()
}

/// One decoding step of `n` tokens for `seq` in every layer.
fn step(cache: &mut dyn KvCache, model: &mut Model, seq: SeqId, n: usize, rng: &mut SplitMix64) {
    cache.reserve(seq, n).unwrap();
    for layer in 0..SHAPE.num_layers {
        let (k, v) = (rows(n, rng), rows(n, rng));
        put(cache, layer, seq, &k, &v).unwrap();
        model.k.entry((seq, layer)).or_default().extend(&k);
        model.v.entry((seq, layer)).or_default().extend(&v);
    }
    cache.commit(seq, n).unwrap();
}

fn check(cache: &dyn KvCache, model: &Model, seqs: &[SeqId]) {
    let len = cache.len(seqs[0]).unwrap();
    for layer in 0..SHAPE.num_layers {
        let (k, v) = get(cache, layer, seqs, len).unwrap();
        let want_k: Vec<f32> = seqs.iter().flat_map(|s| model.k[&(*s, layer)][..len * SHAPE.row()].to_vec()).collect();
        let want_v: Vec<f32> = seqs.iter().flat_map(|s| model.v[&(*s, layer)][..len * SHAPE.row()].to_vec()).collect();
        assert_eq!(k.to_f32(), want_k, "{} layer {layer} keys", cache.kind());
        assert_eq!(v.to_f32(), want_v, "{} layer {layer} values", cache.kind());
    }
}

#[test]
fn sequences_of_different_lengths_round_trip() {
    for mut cache in caches(SHAPE) {
        let mut rng = SplitMix64(3);
        let mut model = Model::default();
        let seqs: Vec<SeqId> = (0..3).map(|_| cache.add_sequence().unwrap()).collect();
        // Prefills of different sizes, then interleaved decode steps that
        // cross block boundaries (15, 16, 17, 33 ...).
        for (s, n) in seqs.iter().zip([15, 33, 1]) {
            step(cache.as_mut(), &mut model, *s, n, &mut rng);
        }
        for round in 0..20 {
            for (i, s) in seqs.iter().enumerate() {
                step(cache.as_mut(), &mut model, *s, 1 + (round + i) % 3, &mut rng);
            }
        }
        for s in &seqs {
            check(cache.as_ref(), &model, &[*s]);
        }
        // Two sequences of equal length gathered as one batch.
        let a = cache.add_sequence().unwrap();
        let len = cache.len(seqs[1]).unwrap();
        step(cache.as_mut(), &mut model, a, len, &mut rng);
        check(cache.as_ref(), &model, &[seqs[1], a]);
    }
}

#[test]
fn uncommitted_rows_are_readable_by_their_own_step() {
    // The attention layer appends a step's keys, then reads them back with
    // the cached ones before committing.
    for mut cache in caches(SHAPE) {
        let s = cache.add_sequence().unwrap();
        cache.reserve(s, 18).unwrap();
        let k: Vec<f32> = (0..18 * SHAPE.row()).map(|i| i as f32).collect();
        put(cache.as_mut(), 0, s, &k, &k).unwrap();
        let (gk, _) = get(cache.as_ref(), 0, &[s], 18).unwrap();
        assert_eq!(gk.to_f32(), k);
        assert_eq!(cache.len(s).unwrap(), 0);
        assert!(matches!(get(cache.as_ref(), 0, &[s], 19), Err(KvCacheError::TooShort { .. })));
    }
}

#[test]
fn half_precision_caches_round_once() {
    for dtype in [DType::F16, DType::BF16] {
        let shape = CacheShape { dtype, ..SHAPE };
        for mut cache in caches(shape) {
            let s = cache.add_sequence().unwrap();
            cache.reserve(s, 20).unwrap();
            let mut rng = SplitMix64(8);
            let k = rows(20, &mut rng);
            put(cache.as_mut(), 2, s, &k, &k).unwrap();
            cache.commit(s, 20).unwrap();
            let (gk, _) = get(cache.as_ref(), 2, &[s], 20).unwrap();
            assert_eq!(gk.dtype(), dtype);
            assert_eq!(gk, HostData::from_f32(dtype, &k));
        }
    }
}

#[test]
fn contiguous_capacity_is_a_typed_error_and_changes_nothing() {
    let mut cache = ContiguousCache::new(SHAPE, 2, 10).unwrap();
    let mut model = Model::default();
    let mut rng = SplitMix64(1);
    let s = cache.add_sequence().unwrap();
    step(&mut cache, &mut model, s, 8, &mut rng);
    let err = cache.reserve(s, 3).unwrap_err();
    assert_eq!(err, KvCacheError::CapacityExceeded { seq: s, len: 8, requested: 3, capacity: 10 });
    assert!(err.to_string().contains("capacity of 10"), "{err}");
    // Appending without the reservation is refused too.
    let k = rows(3, &mut rng);
    assert!(matches!(put(&mut cache, 0, s, &k, &k), Err(KvCacheError::NotReserved { .. })));
    assert!(matches!(cache.commit(s, 3), Err(KvCacheError::NotReserved { .. })));
    assert_eq!(cache.len(s).unwrap(), 8);
    check(&cache, &model, &[s]);
    step(&mut cache, &mut model, s, 2, &mut rng);
    check(&cache, &model, &[s]);
    assert!(matches!(cache.reserve(s, usize::MAX), Err(KvCacheError::CapacityExceeded { .. })));
    // Slots run out, and come back when freed.
    let _t = cache.add_sequence().unwrap();
    assert_eq!(cache.add_sequence(), Err(KvCacheError::NoFreeSlot { slots: 2 }));
    cache.remove_sequence(s).unwrap();
    let again = cache.add_sequence().unwrap();
    assert_eq!(cache.len(again).unwrap(), 0);
    assert_eq!(cache.len(s).unwrap(), 0, "the slot is reused with a fresh length");
}

#[test]
fn paged_pool_exhaustion_is_a_typed_error_and_changes_nothing() {
    let mut cache = PagedCache::new(SHAPE, 16, 4).unwrap();
    let mut model = Model::default();
    let mut rng = SplitMix64(2);
    let a = cache.add_sequence().unwrap();
    let b = cache.add_sequence().unwrap();
    step(&mut cache, &mut model, a, 40, &mut rng); // 3 blocks
    assert_eq!(cache.free_blocks(), 1);
    let err = cache.reserve(b, 17).unwrap_err();
    assert_eq!(err, KvCacheError::PoolExhausted { seq: b, needed: 2, free: 1, total: 4, block_size: 16 });
    assert_eq!(cache.free_blocks(), 1, "a failed reservation takes no block");
    assert!(cache.block_table(b).unwrap().is_empty());
    check(&cache, &model, &[a]);
    // The last block fits 16 tokens of b; a's tail still has 8 free rows.
    step(&mut cache, &mut model, b, 16, &mut rng);
    step(&mut cache, &mut model, a, 8, &mut rng);
    assert!(matches!(cache.reserve(a, 1), Err(KvCacheError::PoolExhausted { .. })));
    check(&cache, &model, &[a]);
    check(&cache, &model, &[b]);
    // Block tables never share a block.
    let (ta, tb) = (cache.block_table(a).unwrap().to_vec(), cache.block_table(b).unwrap().to_vec());
    assert!(ta.iter().all(|x| !tb.contains(x)), "{ta:?} {tb:?}");
    // Freed blocks return to the pool.
    cache.remove_sequence(a).unwrap();
    assert_eq!(cache.free_blocks(), 3);
    let c = cache.add_sequence().unwrap();
    step(&mut cache, &mut model, c, 48, &mut rng);
    check(&cache, &model, &[c]);
    check(&cache, &model, &[b]);
    assert!(matches!(cache.len(a), Err(KvCacheError::UnknownSequence(_))));
}

#[test]
fn argument_errors() {
    assert_eq!(PagedCache::new(SHAPE, 8, 4).err(), Some(KvCacheError::BlockSize(8)));
    assert_eq!(PagedCache::new(SHAPE, 16, 0).err(), Some(KvCacheError::Zero { what: "num_blocks" }));
    assert_eq!(ContiguousCache::new(SHAPE, 1, 0).err(), Some(KvCacheError::Zero { what: "capacity" }));
    assert!(matches!(ContiguousCache::new(SHAPE, usize::MAX / 4, 8), Err(KvCacheError::TooLarge { .. })));
    for mut cache in caches(SHAPE) {
        let s = cache.add_sequence().unwrap();
        cache.reserve(s, 2).unwrap();
        let k = vec![0.5f32; 2 * SHAPE.row()];
        assert_eq!(put(cache.as_mut(), 3, s, &k, &k), Err(KvCacheError::Layer { layer: 3, num_layers: 3 }));
        let narrow = Matrix::from_host(2, SHAPE.row() - 1, vec![0.5; 2 * (SHAPE.row() - 1)]).unwrap();
        let full = Matrix::from_host(2, SHAPE.row(), k.clone()).unwrap();
        let one = [AppendRows { seq: s, first_row: 0, len: 2 }];
        assert!(matches!(cache.append(0, &one, &narrow, &narrow), Err(KvCacheError::Rows { .. })));
        assert!(matches!(cache.append(0, &one, &full, &narrow), Err(KvCacheError::Rows { .. })));
        // Rows past the matrix are refused, not read.
        let past = [AppendRows { seq: s, first_row: 1, len: 2 }];
        assert!(matches!(cache.append(0, &past, &full, &full), Err(KvCacheError::View(_))));
        assert!(matches!(put(cache.as_mut(), 0, SeqId(99), &k, &k), Err(KvCacheError::UnknownSequence(SeqId(99)))));
        assert!(matches!(cache.reserve(SeqId(99), 1), Err(KvCacheError::UnknownSequence(_))));
        assert!(matches!(cache.remove_sequence(SeqId(99)), Err(KvCacheError::UnknownSequence(_))));
    }
}

/// The view's elements, read through its layout.
fn read_view(view: &crate::tensor::TensorView<'_>) -> Vec<f32> {
    let host = view.host().unwrap();
    let l = view.layout();
    let [b, s, h, d] = l.shape;
    let mut out = Vec::new();
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                out.extend((0..d).map(|x| host.get_f32(l.row(bi, si, hi) + x)));
            }
        }
    }
    out
}

#[test]
fn views_read_in_place_what_gather_copies() {
    let mut rng = SplitMix64(4);
    let mut model = Model::default();
    let mut contiguous = ContiguousCache::new(SHAPE, 3, 40).unwrap();
    let seqs: Vec<SeqId> = (0..3).map(|_| contiguous.add_sequence().unwrap()).collect();
    for s in &seqs {
        step(&mut contiguous, &mut model, *s, 21, &mut rng);
    }
    for batch in [&seqs[..1], &seqs[1..], &seqs[..]] {
        let views = contiguous.views(1, batch, 21).unwrap().expect("consecutive slots have a view");
        assert!(!views.k.layout().is_contiguous(), "capacity 40 > length 21: strided");
        let (k, v) = get(&contiguous, 1, batch, 21).unwrap();
        assert_eq!(read_view(&views.k), k.to_f32());
        assert_eq!(read_view(&views.v), v.to_f32());
    }
    // Slots out of order or with gaps: no view, gather instead.
    assert!(contiguous.views(0, &[seqs[1], seqs[0]], 21).unwrap().is_none());
    assert!(contiguous.views(0, &[seqs[0], seqs[2]], 21).unwrap().is_none());
    assert!(matches!(contiguous.views(0, &seqs, 22), Err(KvCacheError::TooShort { .. })));

    let mut model = Model::default(); // sequence ids restart in a new cache
    let mut paged = PagedCache::new(SHAPE, 16, 8).unwrap();
    let a = paged.add_sequence().unwrap();
    step(&mut paged, &mut model, a, 40, &mut rng); // blocks 0, 1, 2
    let views = paged.views(2, &[a], 40).unwrap().expect("blocks 0..3 are consecutive");
    let (k, _) = get(&paged, 2, &[a], 40).unwrap();
    assert_eq!(read_view(&views.k), k.to_f32());
    // Interleaved growth scatters the blocks of two sequences.
    let b = paged.add_sequence().unwrap();
    step(&mut paged, &mut model, b, 16, &mut rng); // block 3
    step(&mut paged, &mut model, a, 10, &mut rng); // block 4 after a's 0..3
    assert_eq!(paged.block_table(a).unwrap(), &[0, 1, 2, 4]);
    assert!(paged.views(0, &[a], 50).unwrap().is_none());
    assert!(paged.views(0, &[a], 48).unwrap().is_some(), "the first three blocks are still consecutive");
    assert!(paged.views(0, &[a, b], 16).unwrap().is_none(), "several sequences: gather");
    check(&paged, &model, &[a]);
}

#[test]
fn paged_kv_exposes_the_pool_and_each_sequence_s_table() {
    let mut rng = SplitMix64(5);
    let mut model = Model::default();
    let mut paged = PagedCache::new(SHAPE, 16, 12).unwrap();
    let (a, b) = (paged.add_sequence().unwrap(), paged.add_sequence().unwrap());
    step(&mut paged, &mut model, a, 20, &mut rng);
    step(&mut paged, &mut model, b, 40, &mut rng);
    step(&mut paged, &mut model, a, 17, &mut rng);
    let (row, bs) = (SHAPE.row(), 16);
    let layout = paged.paged_layout(&[(a, 37), (b, 5)]).unwrap().expect("a paged cache");
    // Three blocks needed; the table is a power of two wide (4).
    assert_eq!(layout, crate::problem::PagedKv { block_size: 16, num_blocks: 12, table_width: 4 });
    let b_block = paged.block_table(b).unwrap()[0] as i32;
    let access = paged.paged_kv(1, &[(a, 37), (b, 5)]).unwrap().expect("a paged cache");
    assert_eq!(access.layout, layout);
    assert_eq!(access.k.shape(), [12, 16, SHAPE.num_kv_heads, SHAPE.head_dim]);
    let table = access.index.block_table.download().unwrap();
    assert_eq!(access.index.seq_lens.download().unwrap(), vec![37, 5]);
    assert_eq!(table[3], -1, "-1 past the length");
    assert_eq!(&table[4..], &[b_block, -1, -1, -1], "-1 past the length");
    // Every position read through the table is the row gather copies.
    let pool = access.k.host().unwrap().clone();
    for (i, (seq, len)) in [(a, 37), (b, 5)].into_iter().enumerate() {
        let (k, _) = get(&paged, 1, &[seq], len).unwrap();
        for j in 0..len {
            let at = (table[i * 4 + j / bs] as usize * bs + j % bs) * row;
            let got: Vec<f32> = (0..row).map(|x| pool.get_f32(at + x)).collect();
            assert_eq!(got, k.to_f32()[j * row..(j + 1) * row], "sequence {i} position {j}");
        }
    }
    // The same request (another layer) writes nothing; a shorter length
    // rewrites the lengths only; one that drops a block rewrites the table.
    let none = IndexUploads { allocations: 1, table_writes: 0, len_writes: 0 };
    assert_eq!(paged.index_uploads(), none);
    paged.paged_kv(2, &[(a, 37), (b, 5)]).unwrap().unwrap();
    assert_eq!(paged.index_uploads(), none);
    let other = paged.paged_kv(2, &[(a, 36), (b, 5)]).unwrap().unwrap();
    assert_eq!(other.index.seq_lens.download().unwrap(), vec![36, 5]);
    assert_eq!(paged.index_uploads(), IndexUploads { len_writes: 1, ..none });
    let b_blocks: Vec<i32> = paged.block_table(b).unwrap()[..2].iter().map(|&x| x as i32).collect();
    let other = paged.paged_kv(2, &[(a, 36), (b, 20)]).unwrap().unwrap();
    assert_eq!(other.index.block_table.download().unwrap()[4..], [b_blocks[0], b_blocks[1], -1, -1]);
    assert_eq!(paged.index_uploads(), IndexUploads { allocations: 1, table_writes: 1, len_writes: 2 });
    // Another group is kept beside it; a wider table is a new allocation.
    paged.paged_kv(0, &[(b, 5)]).unwrap().unwrap();
    paged.paged_kv(0, &[(a, 36), (b, 20)]).unwrap().unwrap();
    assert_eq!(paged.index_uploads().allocations, 2);
    step(&mut paged, &mut model, a, 40, &mut rng);
    let wide = paged.paged_kv(0, &[(a, 77), (b, 5)]).unwrap().unwrap();
    assert_eq!(wide.layout.table_width, 8);
    assert_eq!(paged.index_uploads().allocations, 3);
    assert!(matches!(paged.paged_kv(0, &[(b, 41)]), Err(KvCacheError::TooShort { .. })));
    assert!(matches!(paged.paged_kv(3, &[(b, 5)]), Err(KvCacheError::Layer { .. })));
    // Removing a sequence drops the indexes that name it.
    paged.remove_sequence(a).unwrap();
    paged.paged_kv(0, &[(b, 5)]).unwrap().unwrap();
    assert_eq!(paged.index_uploads().allocations, 3, "b alone was kept");
    let mut contiguous = ContiguousCache::new(SHAPE, 2, 8).unwrap();
    assert!(contiguous.paged_layout(&[]).unwrap().is_none());
    assert!(contiguous.paged_kv(0, &[]).unwrap().is_none());
}

#[test]
fn appending_columns_of_wider_rows_is_appending_those_rows() {
    let mut rng = SplitMix64(8);
    let row = SHAPE.row();
    for (mut narrow, mut wide) in caches(SHAPE).into_iter().zip(caches(SHAPE)) {
        let (a, b) = (narrow.add_sequence().unwrap(), wide.add_sequence().unwrap());
        for n in [5, 1, 12] {
            narrow.reserve(a, n).unwrap();
            wide.reserve(b, n).unwrap();
            let (k, v, other) = (rows(n, &mut rng), rows(n, &mut rng), rows(n, &mut rng));
            // [other | v | k] rows: the columns need not be in q, k, v order.
            let packed: Vec<f32> = (0..n)
                .flat_map(|r| {
                    [&other[r * row..(r + 1) * row], &v[r * row..(r + 1) * row], &k[r * row..(r + 1) * row]].concat()
                })
                .collect();
            let m = Matrix::from_host(n, 3 * row, packed).unwrap();
            for layer in 0..SHAPE.num_layers {
                put(narrow.as_mut(), layer, a, &k, &v).unwrap();
                let entries = [AppendRows { seq: b, first_row: 0, len: n }];
                wide.append_columns(layer, &entries, m.columns(2 * row, row).unwrap(), m.columns(row, row).unwrap())
                    .unwrap();
            }
            narrow.commit(a, n).unwrap();
            wide.commit(b, n).unwrap();
        }
        let len = narrow.len(a).unwrap();
        for layer in 0..SHAPE.num_layers {
            assert_eq!(get(narrow.as_ref(), layer, &[a], len).unwrap(), get(wide.as_ref(), layer, &[b], len).unwrap());
        }
        let bad = Matrix::from_host(1, 3 * row, vec![0.0; 3 * row]).unwrap();
        wide.reserve(b, 1).unwrap();
        let entries = [AppendRows { seq: b, first_row: 0, len: 1 }];
        let err = wide.append_columns(0, &entries, bad.columns(0, row - 1).unwrap(), bad.columns(row, row).unwrap());
        assert!(matches!(err, Err(KvCacheError::Rows { .. })), "{err:?}");
    }
}

#[test]
fn overflowing_sizes_and_refused_allocations_are_told_apart() {
    let e = ContiguousCache::new(SHAPE, usize::MAX / 4, 8).err().unwrap();
    assert!(matches!(e, KvCacheError::TooLarge { .. }), "{e}");
    assert!(e.to_string().ends_with("is too large: more rows than a usize can count"), "{e}");
    // Rows fit, bytes do not.
    let e = ContiguousCache::new(SHAPE, 1, 1 << 61).err().unwrap();
    assert!(matches!(e, KvCacheError::TooLarge { .. }) && e.to_string().contains("more than a usize can count"), "{e}");
    // Countable, but 2^58 bytes per tensor: the host refuses it (nothing is touched).
    let e = ContiguousCache::new(SHAPE, 1, 1 << 53).err().unwrap();
    let KvCacheError::Alloc(a) = &e else { panic!("not an allocation error: {e}") };
    assert_eq!(a.bytes, 1 << 58);
    assert_eq!(
        e.to_string(),
        "cannot allocate 256.0 PiB of host memory for the KV cache's layer 0 keys (the whole cache: 1.5 EiB = \
         1 slot × 9007199254740992 tokens × 8 elements × 2 (keys and values) × 3 layers × 4 bytes)"
    );
    let e = PagedCache::new(SHAPE, 16, 1 << 33).err().unwrap();
    assert!(e.to_string().contains("8589934592 blocks of 16 tokens is too large: block ids are 32-bit"), "{e}");
}
