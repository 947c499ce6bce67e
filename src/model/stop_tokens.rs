//! The end-of-sequence ids of a model directory, as transformers'
//! `generate` finds them: `eos_token_id` of `generation_config.json` when
//! that file exists and sets it, else of `config.json`. The value may be
//! one id or a list of ids; `null` or absent means none. Anything else is
//! an error naming the file and the field.
//!
//! Ids are kept as written, even past the vocabulary (such an id can never
//! be generated, so it never stops a sequence: the GLM fixtures inherit
//! GLM-4's ids, far past their 100-token vocabulary).

use super::config::ConfigError;
use serde_json::Value;
use std::path::{Path, PathBuf};

pub const GENERATION_CONFIG: &str = "generation_config.json";

/// Where a model's stop ids came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopTokens {
    pub ids: Vec<u32>,
    /// The file that set them; `None` when neither file does.
    pub source: Option<PathBuf>,
}

impl StopTokens {
    /// Reads `dir/generation_config.json` (optional) and `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<StopTokens, ConfigError> {
        for name in [GENERATION_CONFIG, "config.json"] {
            let path = dir.join(name);
            if name == GENERATION_CONFIG && !path.exists() {
                continue;
            }
            let text =
                std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            let value: Value =
                serde_json::from_str(&text).map_err(|source| ConfigError::Json { path: path.clone(), source })?;
            let in_file = |e| ConfigError::InFile { path: path.clone(), source: Box::new(e) };
            if let Some(ids) = eos_ids(&value).map_err(in_file)? {
                return Ok(StopTokens { ids, source: Some(path) });
            }
        }
        Ok(StopTokens { ids: Vec::new(), source: None })
    }
}

/// `eos_token_id` of one decoded file: `None` when absent or null.
pub fn eos_ids(value: &Value) -> Result<Option<Vec<u32>>, ConfigError> {
    const FIELD: &str = "eos_token_id";
    let obj = value.as_object().ok_or(ConfigError::NotAnObject)?;
    let wrong = |got: &Value| ConfigError::WrongType {
        field: FIELD.into(),
        expected: "a token id (a non-negative 32-bit integer) or a list of them",
        got: got.to_string(),
    };
    let id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| wrong(v));
    match obj.get(FIELD) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items.iter().map(id).collect::<Result<Vec<_>, _>>().map(Some),
        Some(v) => id(v).map(|i| Some(vec![i])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_id_a_list_or_none() {
        assert_eq!(eos_ids(&json!({"eos_token_id": 2})).unwrap(), Some(vec![2]));
        assert_eq!(eos_ids(&json!({"eos_token_id": [7, 9]})).unwrap(), Some(vec![7, 9]));
        assert_eq!(eos_ids(&json!({"eos_token_id": []})).unwrap(), Some(vec![]));
        assert_eq!(eos_ids(&json!({"eos_token_id": null})).unwrap(), None);
        assert_eq!(eos_ids(&json!({})).unwrap(), None);
        for bad in [json!({"eos_token_id": -1}), json!({"eos_token_id": "2"}), json!({"eos_token_id": [1, 2.5]})] {
            let e = eos_ids(&bad).unwrap_err();
            assert_eq!(e.field(), Some("eos_token_id"), "{bad}");
        }
        assert!(eos_ids(&json!({"eos_token_id": 1u64 << 33})).is_err());
    }

    #[test]
    fn generation_config_wins_over_config() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, v: serde_json::Value| std::fs::write(dir.path().join(name), v.to_string()).unwrap();
        write("config.json", json!({"eos_token_id": [1, 2]}));
        let s = StopTokens::from_dir(dir.path()).unwrap();
        assert_eq!((s.ids, s.source), (vec![1, 2], Some(dir.path().join("config.json"))));
        write(GENERATION_CONFIG, json!({"eos_token_id": 5}));
        assert_eq!(StopTokens::from_dir(dir.path()).unwrap().ids, vec![5]);
        // A generation config without the field defers to config.json.
        write(GENERATION_CONFIG, json!({"do_sample": false}));
        assert_eq!(StopTokens::from_dir(dir.path()).unwrap().ids, vec![1, 2]);
        write("config.json", json!({"eos_token_id": null}));
        assert_eq!(StopTokens::from_dir(dir.path()).unwrap(), StopTokens { ids: vec![], source: None });
        write(GENERATION_CONFIG, json!({"eos_token_id": "x"}));
        let e = StopTokens::from_dir(dir.path()).unwrap_err();
        assert!(e.to_string().contains(GENERATION_CONFIG) && e.to_string().contains("eos_token_id"), "{e}");
        std::fs::write(dir.path().join(GENERATION_CONFIG), "{").unwrap();
        assert!(StopTokens::from_dir(dir.path()).unwrap_err().to_string().contains(GENERATION_CONFIG));
    }
}
