//! The `.npy` reader: no input may panic or abort, and whatever it accepts
//! must be a 4-d tensor whose data fills its shape exactly and re-encodes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = rocmforge::io::decode_npy(data) {
        let elements: usize = t.shape.iter().product();
        assert_eq!(t.data.len(), elements, "accepted a tensor whose data does not fill its shape");
        let again = rocmforge::io::encode_npy(t.shape, &t.data).expect("an accepted tensor re-encodes");
        let back = rocmforge::io::decode_npy(&again).expect("our own encoding decodes");
        assert_eq!(back.shape, t.shape);
        assert_eq!(back.data.as_bytes(), t.data.as_bytes());
    }
});
