//! Yes/no environment variables (`ROCMFORGE_REQUIRE_GPU`, ...), read one
//! way everywhere: a typo must not silently mean "no".

/// `Ok(false)` when unset, empty or 0/false/no/off; `Ok(true)` for
/// 1/true/yes/on (any case, surrounding spaces ignored); otherwise an error
/// naming the variable, its value and the accepted spellings.
pub fn env_flag(name: &str) -> Result<bool, String> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(false),
        Err(std::env::VarError::NotUnicode(v)) => Err(format!("{name}={v:?} is not UTF-8")),
        Ok(v) => parse_flag(&v).ok_or_else(|| format!("{name}={v:?}: expected 1/true/yes/on or 0/false/no/off")),
    }
}

/// The spellings `env_flag` accepts.
pub fn parse_flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "" | "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        for v in ["1", "true", "YES", " on "] {
            assert_eq!(parse_flag(v), Some(true), "{v}");
        }
        for v in ["", "0", "False", "no", "OFF"] {
            assert_eq!(parse_flag(v), Some(false), "{v}");
        }
        for v in ["2", "y", "enable", "1 1", "treu"] {
            assert_eq!(parse_flag(v), None, "{v}");
        }
        assert_eq!(env_flag("ROCMFORGE_SURELY_UNSET_VARIABLE_FOR_THIS_TEST"), Ok(false));
    }
}
