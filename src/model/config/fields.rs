//! [`Fields`]: typed access to one JSON object of `config.json`, with errors
//! naming the field's JSON path.

use super::ConfigError;
use serde_json::{Map, Value};

/// Typed access to one JSON object, with errors naming `prefix.key`.
pub(super) struct Fields<'a> {
    pub(super) obj: &'a Map<String, Value>,
    pub(super) prefix: &'a str,
}

impl<'a> Fields<'a> {
    pub fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// The value, with JSON `null` treated as absent (transformers writes
    /// `null` for unset optional fields).
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// The error for a required field that [`Fields::get`] did not find:
    /// `null` (present, no value) or missing.
    pub fn missing(&self, key: &str, expected: &'static str) -> ConfigError {
        match self.obj.get(key) {
            Some(Value::Null) => ConfigError::Null { field: self.path(key), expected },
            _ => ConfigError::Missing { field: self.path(key) },
        }
    }

    pub fn wrong(&self, key: &str, expected: &'static str, got: &Value) -> ConfigError {
        ConfigError::WrongType { field: self.path(key), expected, got: got.to_string() }
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a non-negative integer", v)),
        }
    }

    pub fn usize(&self, key: &str) -> Result<usize, ConfigError> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key, "a non-negative integer"))
    }

    /// A positive integer (sizes, counts).
    pub fn positive(&self, key: &str) -> Result<usize, ConfigError> {
        let n = self.usize(key)?;
        self.check_positive(key, n)
    }

    pub fn check_positive(&self, key: &str, n: usize) -> Result<usize, ConfigError> {
        if n == 0 {
            return Err(ConfigError::Invalid {
                field: self.path(key),
                value: "0".into(),
                why: "must be at least 1".into(),
            });
        }
        Ok(n)
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                v.as_f64().filter(|x| x.is_finite()).map(Some).ok_or_else(|| self.wrong(key, "a finite number", v))
            }
        }
    }

    pub fn f64(&self, key: &str) -> Result<f64, ConfigError> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key, "a finite number"))
    }

    /// A finite number greater than zero.
    pub fn positive_f64(&self, key: &str) -> Result<f64, ConfigError> {
        let x = self.f64(key)?;
        if x <= 0.0 {
            return Err(ConfigError::Invalid {
                field: self.path(key),
                value: x.to_string(),
                why: "must be > 0".into(),
            });
        }
        Ok(x)
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.wrong(key, "true or false", v)),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.wrong(key, "a string", v)),
        }
    }

    pub fn opt_object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_object().map(Some).ok_or_else(|| self.wrong(key, "an object", v)),
        }
    }
}
