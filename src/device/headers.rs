//! The embedded kernel headers as the C arrays NVRTC and hiprtc take
//! (`headers[]` and `includeNames[]`), so `#include "rf/…"` resolves in
//! memory with no file and no toolkit header.

use crate::kernels::HEADERS;
use std::ffi::{c_char, CString};

pub(crate) struct CHeaders {
    texts: Vec<CString>,
    names: Vec<CString>,
}

impl CHeaders {
    /// Every embedded header. Header texts are ours and contain no NUL
    /// byte (a unit test checks), so none is dropped.
    pub(crate) fn all() -> CHeaders {
        let (texts, names) = HEADERS
            .iter()
            .filter_map(|(name, text)| Some((CString::new(*text).ok()?, CString::new(*name).ok()?)))
            .unzip();
        CHeaders { texts, names }
    }

    pub(crate) fn count(&self) -> i32 {
        self.texts.len() as i32
    }

    /// Pointers valid while `self` lives.
    pub(crate) fn text_ptrs(&self) -> Vec<*const c_char> {
        self.texts.iter().map(|t| t.as_ptr()).collect()
    }

    pub(crate) fn name_ptrs(&self) -> Vec<*const c_char> {
        self.names.iter().map(|n| n.as_ptr()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_converts() {
        assert_eq!(CHeaders::all().count() as usize, HEADERS.len());
    }
}
