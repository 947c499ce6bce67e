//! The `.safetensors` path: the crate's parser plus our checks (header
//! start, duplicate names, 4-d, dtype, byte count), by name and without.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = rocmforge::io::decode_safetensors(data, None) {
        let elements: usize = t.shape.iter().product();
        assert_eq!(t.data.len(), elements, "accepted a tensor whose data does not fill its shape");
    }
    let _ = rocmforge::io::decode_safetensors(data, Some("q"));
});
