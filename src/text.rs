//! Small text helpers for messages.

/// `s` cut to at most `max` characters, with an ellipsis when cut, so that a
/// long user input never floods an error message.
pub fn truncated(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((at, _)) => format!("{}… ({} bytes)", &s[..at], s.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_inputs_are_cut() {
        assert_eq!(truncated("abc", 5), "abc");
        let long = "x".repeat(100);
        let t = truncated(&long, 10);
        assert!(t.starts_with("xxxxxxxxxx…") && t.contains("100 bytes"), "{t}");
    }
}
