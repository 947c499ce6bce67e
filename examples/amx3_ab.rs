//! EXPERIMENT (amx3, temporary): in-process A/B of the bf16 path's runtime
//! switches, call by call, so that every setting sees the same host phases.
//!
//! `amx3_ab [--dtype bf16] [--rounds N] [--knobs 0,1,2,3] [--calls C]`

use rocmforge::backends::cpu_flash::{set_experiment_knobs, CpuFlash};
use rocmforge::{AttentionBackend, AttentionProblem, DType, Device, Mask, Tensor};
use std::time::Instant;

fn process_cpu_ns() -> u64 {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("schedstat")).unwrap();
        total += stat.split_whitespace().next().unwrap().parse::<u64>().unwrap();
    }
    total
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut dtype = DType::BF16;
    let (mut rounds, mut calls) = (10usize, 3usize);
    let mut knobs: Vec<u32> = vec![0, 1, 2, 3];
    let mut label = String::new();
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        let v = it.next().ok_or("flag needs a value")?;
        match f.as_str() {
            "--dtype" => dtype = v.parse()?,
            "--rounds" => rounds = v.parse()?,
            "--calls" => calls = v.parse()?,
            "--knobs" => knobs = v.split(',').map(|x| x.parse().unwrap()).collect(),
            "--label" => label = v,
            _ => return Err(format!("unknown flag {f}").into()),
        }
    }
    let cf = CpuFlash::new();
    let flash: &dyn AttentionBackend = &cf;
    for (shape, mask) in [([1, 32, 32, 1024, 1024, 128], Mask::None), ([1, 32, 8, 1024, 1024, 128], Mask::Causal)] {
        let [b, hq, hkv, sq, skv, d] = shape;
        let p = AttentionProblem::new(b, sq, skv, hq, hkv, d, dtype).with_mask(mask);
        let q = Tensor::random(p.q_shape(), p.dtype, 1)?;
        let k = Tensor::random(p.kv_shape(), p.dtype, 2)?;
        let v = Tensor::random(p.kv_shape(), p.dtype, 3)?;
        let mut out = Tensor::nan(p.out_shape(), p.dtype, &Device::Cpu)?;
        let mut base: Option<Vec<f32>> = None;
        for &kn in &knobs {
            set_experiment_knobs(kn);
            flash.forward(&p, &q, &k, &v, &mut out)?;
            let o = out.to_f32_vec()?;
            let nan = o.iter().filter(|x| !x.is_finite()).count();
            let diff = base.as_ref().map_or(0.0f32, |b| b.iter().zip(&o).map(|(a, c)| (a - c).abs()).fold(0.0, f32::max));
            println!("{label} {shape:?} {mask} knobs {kn}: non-finite {nan}, max |out - out(knobs {})| {diff:e}", knobs[0]);
            base.get_or_insert(o);
        }
        let n = knobs.len();
        let mut wall = vec![Vec::new(); n];
        let mut cpu = vec![Vec::new(); n];
        let mut ratios = vec![Vec::new(); n];
        for r in 0..rounds {
            let mut rw = vec![0.0; n];
            for i in 0..n {
                let ki = (i + r) % n;
                set_experiment_knobs(knobs[ki]);
                let mut ws = Vec::new();
                for _ in 0..calls {
                    let (t, c) = (Instant::now(), process_cpu_ns());
                    flash.forward(&p, &q, &k, &v, &mut out)?;
                    let w = t.elapsed().as_secs_f64() * 1e3;
                    wall[ki].push(w);
                    cpu[ki].push((process_cpu_ns() - c) as f64 * 1e-6);
                    ws.push(w);
                }
                rw[ki] = median(&mut ws);
            }
            for i in 0..n {
                ratios[i].push(rw[0] / rw[i]);
            }
        }
        for i in 0..n {
            let mn = wall[i].iter().cloned().fold(f64::INFINITY, f64::min);
            let cmin = cpu[i].iter().cloned().fold(f64::INFINITY, f64::min);
            println!(
                "{label} {shape:?} {mask} {} knobs {}: wall median {:.2} min {:.2} ms | cpu median {:.2} min {:.2} ms | speed vs knobs {} median {:.3} (rounds {:.2}-{:.2})",
                dtype.name(),
                knobs[i],
                median(&mut wall[i]),
                mn,
                median(&mut cpu[i]),
                cmin,
                knobs[0],
                median(&mut ratios[i].clone()),
                ratios[i].iter().cloned().fold(f64::INFINITY, f64::min),
                ratios[i].iter().cloned().fold(0.0, f64::max),
            );
        }
    }
    Ok(())
}
