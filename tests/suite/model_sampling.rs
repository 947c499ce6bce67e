//! Sampling and stop tokens in `generate_with` on the fixtures: seeded
//! draws are reproducible and independent of the batch around a sequence,
//! the limits of sampling (top-k 1, a tiny temperature) are Hugging Face's
//! greedy tokens, a sequence ends right after its EOS token while the
//! others go on, and on a GPU the same seed gives the CPU's tokens.

use super::model_fixtures::{decoder, fixture_dir, reference, CACHES, FAMILIES};
use rocmforge::model::{
    generate_with, CacheKind, Decoder, DecoderOptions, FinishReason, GenerateOptions, GenerateRequest, Generation,
    ModelError, Sampling, SamplingError,
};
use rocmforge::selection::DeviceChoice;
use rocmforge::{AttentionConfig, DType};

fn run(d: &mut Decoder, prompts: Vec<Vec<u32>>, max_new: usize, cache: CacheKind, o: &GenerateOptions) -> Generation {
    let request = GenerateRequest { prompts, max_new, cache };
    generate_with(d, &request, o).unwrap_or_else(|e| panic!("{e}"))
}

fn sampled(temperature: f64, top_k: Option<usize>, top_p: Option<f64>, seed: u64) -> GenerateOptions {
    GenerateOptions { sampling: Sampling { temperature, top_k, top_p, seed }, stop_tokens: Vec::new() }
}

#[test]
fn sampling_limits_are_the_transformers_greedy_tokens() {
    // top-k 1 and a temperature far below the fixtures' smallest logit
    // margin (3e-3) go through the sampling path (downloaded logits, host
    // draws) and must still pick HF's greedy tokens.
    for name in FAMILIES {
        let r = reference(name);
        let mut d = decoder(name, None);
        for (what, o) in [("top-k 1", sampled(1.5, Some(1), None, 3)), ("T=1e-6", sampled(1e-6, None, None, 3))] {
            let g = run(&mut d, vec![r.prompt.clone(); 2], r.greedy.len(), CacheKind::Contiguous, &o);
            assert_eq!(g.tokens, vec![r.greedy.clone(); 2], "{name} {what}");
            assert_eq!(g.finish, vec![FinishReason::Length; 2]);
        }
    }
}

#[test]
fn a_seed_fixes_each_sequence_whatever_the_batch() {
    for name in FAMILIES {
        let r = reference(name);
        let mut d = decoder(name, None);
        let vocab = d.config().vocab_size;
        let o = sampled(1.0, Some(40), Some(0.95), 17);
        let n = r.greedy.len();
        for cache in CACHES {
            let batch = run(&mut d, vec![r.prompt.clone(); 3], n, cache, &o);
            let again = run(&mut d, vec![r.prompt.clone(); 3], n, cache, &o);
            assert_eq!(batch.tokens, again.tokens, "{name} {cache:?}: same seed, same tokens");
            // Sequence i draws from stream i: alone, sequence 0 is the same.
            let alone = run(&mut d, vec![r.prompt.clone()], n, cache, &o);
            assert_eq!(alone.tokens[0], batch.tokens[0], "{name} {cache:?}");
            assert!(batch.tokens.iter().all(|t| t.len() == n && t.iter().all(|&x| (x as usize) < vocab)));
            assert_ne!(batch.tokens[0], batch.tokens[1], "{name} {cache:?}: streams differ");
            let other = run(&mut d, vec![r.prompt.clone()], n, cache, &sampled(1.0, Some(40), Some(0.95), 18));
            assert_ne!(other.tokens[0], alone.tokens[0], "{name} {cache:?}: another seed, other tokens");
            assert_ne!(batch.tokens[0], r.greedy, "{name}: T = 1 sampling is not greedy");
        }
    }
}

/// The tokens up to and including the first of `stop`, and why they end.
fn truncated(tokens: &[u32], stop: &[u32]) -> (Vec<u32>, FinishReason) {
    match tokens.iter().position(|t| stop.contains(t)) {
        Some(i) => (tokens[..=i].to_vec(), FinishReason::Stop),
        None => (tokens.to_vec(), FinishReason::Length),
    }
}

#[test]
fn sequences_stop_after_their_eos_token_and_the_others_go_on() {
    for name in FAMILIES {
        let r = reference(name);
        let mut d = decoder(name, None);
        let n = r.greedy.len();
        let prompts = vec![r.prompt.clone(), r.prompt[..5].to_vec(), r.prompt.clone()];
        for (what, base) in [("greedy", GenerateOptions::default()), ("sampled", sampled(0.9, None, Some(0.9), 4))] {
            for cache in CACHES {
                let free = run(&mut d, prompts.clone(), n, cache, &base);
                // Stop at sequence 0's fourth token: 0 and 2 stop there (2
                // too when greedy), 1 wherever (if ever) it produces it.
                let stop = vec![free.tokens[0][3]];
                let o = GenerateOptions { stop_tokens: stop.clone(), ..base.clone() };
                let g = run(&mut d, prompts.clone(), n, cache, &o);
                for (i, t) in free.tokens.iter().enumerate() {
                    let (want, why) = truncated(t, &stop);
                    assert_eq!((&g.tokens[i], g.finish[i]), (&want, why), "{name} {what} {cache:?} seq {i}");
                }
                assert!(g.tokens[0].len() <= 4 && g.finish[0] == FinishReason::Stop);
                let decoded: usize = g.tokens.iter().map(|t| t.len() - 1).sum();
                assert_eq!(g.decode_tokens, decoded, "{name}: only running sequences decode");
            }
        }
        // A prompt whose first token is already EOS: one token, no decode step.
        let first = run(&mut d, vec![r.prompt.clone()], n, CacheKind::Contiguous, &GenerateOptions::default());
        let o = GenerateOptions { stop_tokens: vec![first.tokens[0][0]], ..GenerateOptions::default() };
        let g = run(&mut d, vec![r.prompt.clone()], n, CacheKind::Contiguous, &o);
        assert_eq!((g.tokens[0].len(), g.finish[0], g.decode_tokens), (1, FinishReason::Stop, 0), "{name}");
    }
}

#[test]
fn bad_sampling_arguments_are_typed_errors() {
    let mut d = decoder("llama", None);
    let request = GenerateRequest { prompts: vec![vec![1, 2]], max_new: 2, cache: CacheKind::Contiguous };
    for (o, want) in [
        (sampled(-1.0, None, None, 0), SamplingError::Temperature(-1.0)),
        (sampled(1.0, Some(0), None, 0), SamplingError::TopK),
        (sampled(1.0, None, Some(1.01), 0), SamplingError::TopP(1.01)),
        (sampled(0.0, Some(4), None, 0), SamplingError::NeedsTemperature),
    ] {
        match generate_with(&mut d, &request, &o) {
            Err(ModelError::Sampling { seq: None, source }) => assert_eq!(source, want),
            other => panic!("{o:?}: {:?}", other.map(|g| g.tokens)),
        }
    }
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_sampling_draws_the_cpu_s_tokens() {
    let Some(device) = super::model_gpu::gpu() else { return };
    let rocmforge::Device::Gpu(g) = &device else { unreachable!() };
    for name in FAMILIES {
        let r = reference(name);
        let attention = AttentionConfig { device: DeviceChoice::Gpu(g.ordinal()), ..AttentionConfig::default() };
        let options = DecoderOptions { attention, kv_dtype: Some(DType::F32), dtype: Some(DType::F32) };
        let mut on_gpu = Decoder::load(&fixture_dir(name), options).unwrap();
        let mut on_cpu = decoder(name, None);
        let prompts = vec![r.prompt.clone(), r.prompt[..5].to_vec(), r.prompt.clone()];
        for cache in CACHES {
            for o in [sampled(1.0, None, None, 21), sampled(0.8, Some(20), Some(0.9), 22)] {
                let o = GenerateOptions { stop_tokens: vec![r.greedy[5]], ..o };
                let (a, b) = (
                    run(&mut on_gpu, prompts.clone(), 24, cache, &o),
                    run(&mut on_cpu, prompts.clone(), 24, cache, &o),
                );
                println!("{name} {cache:?} {:?}: gpu {:?} cpu {:?}", o.sampling, a.tokens, b.tokens);
                assert_eq!((&a.tokens, &a.finish), (&b.tokens, &b.finish), "{name} {cache:?} {:?}", o.sampling);
            }
        }
    }
}
