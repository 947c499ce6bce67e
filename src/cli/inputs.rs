//! Host tensors for a command: seeded random inputs and NaN-poisoned
//! outputs, built with fallible allocations (see `host_memory`).

use super::host_memory::{try_vec, HostMemoryError};
use super::CliError;
use half::{bf16, f16};
use rocmforge::dtype::DType;
use rocmforge::io::HostTensor;
use rocmforge::tensor::{HostData, SplitMix64, Tensor};

fn elements(shape: [usize; 4], what: &str) -> Result<usize, HostMemoryError> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| HostMemoryError::AllocFailed {
        what: format!("{what} {shape:?} (more than usize::MAX elements)"),
        bytes: usize::MAX,
    })
}

/// `len` elements of `dtype`, element `i` being `value(i)` rounded to it.
fn fill(dtype: DType, len: usize, what: &str, mut value: impl FnMut() -> f32) -> Result<HostData, HostMemoryError> {
    Ok(match dtype {
        DType::F32 => {
            let mut v = try_vec(len, what)?;
            v.extend((0..len).map(|_| value()));
            HostData::F32(v)
        }
        DType::F16 => {
            let mut v = try_vec(len, what)?;
            v.extend((0..len).map(|_| f16::from_f32(value())));
            HostData::F16(v)
        }
        DType::BF16 => {
            let mut v = try_vec(len, what)?;
            v.extend((0..len).map(|_| bf16::from_f32(value())));
            HostData::BF16(v)
        }
    })
}

/// Uniform values in [-1, 1) from `seed`, the same values as
/// `Tensor::random(shape, dtype, seed)`.
pub fn random(shape: [usize; 4], dtype: DType, seed: u64, what: &str) -> Result<HostTensor, CliError> {
    let len = elements(shape, what)?;
    let mut rng = SplitMix64(seed);
    Ok(HostTensor { shape, data: fill(dtype, len, what, || rng.next_unit() * 2.0 - 1.0)? })
}

/// A host tensor whose every element is NaN, so an element a backend does
/// not write shows up in the check.
pub fn nan(shape: [usize; 4], dtype: DType, what: &str) -> Result<Tensor, CliError> {
    let len = elements(shape, what)?;
    Ok(Tensor::from_host(shape, fill(dtype, len, what, || f32::NAN)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_values_as_the_library_and_no_abort() {
        for dtype in DType::ALL {
            let ours = random([1, 3, 2, 5], dtype, 9, "q").unwrap();
            let lib = Tensor::random([1, 3, 2, 5], dtype, 9).unwrap();
            assert_eq!(ours.data, lib.download().unwrap());
        }
        assert!(nan([1, 2, 2, 2], DType::BF16, "out").unwrap().to_f32_vec().unwrap().iter().all(|x| x.is_nan()));
        let e = random([1, 1 << 40, 1 << 20, 128], DType::F32, 0, "q").unwrap_err().to_string();
        assert!(e.contains("cannot allocate") && e.contains("for q"), "{e}");
        let e = nan([usize::MAX, 2, 1, 1], DType::F32, "out").unwrap_err().to_string();
        assert!(e.contains("more than usize::MAX elements"), "{e}");
    }
}
