//! Where a model directory keeps its weights: `model.safetensors`, or the
//! shards `model.safetensors.index.json` names. A weights path that exists
//! but is not a readable file (a directory, a dangling symbolic link) is
//! named as such rather than reported as missing.

use super::{WeightsError, INDEX_FILE, SINGLE_FILE};
use std::path::{Path, PathBuf};

/// Where the weights are: the files, and for a sharded model the index
/// file with its tensor -> shard map.
pub(super) struct Layout {
    pub files: Vec<PathBuf>,
    pub index: Option<(PathBuf, Vec<(String, PathBuf)>)>,
}

/// What is at a path, without following it blindly.
enum Entry {
    Missing,
    File,
    /// Exists, but cannot be read as a file: the reason, in words.
    NotAFile(String),
}

/// What is at `path`: a file (or a symbolic link to one), nothing, or
/// something else, said in words.
fn entry(path: &Path) -> Result<Entry, WeightsError> {
    let link = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Entry::Missing),
        Err(source) => return Err(WeightsError::Read { file: path.to_path_buf(), source }),
    };
    let (meta, prefix) = if link.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_or_else(|_| "?".into(), |t| t.display().to_string());
        match std::fs::metadata(path) {
            Ok(meta) => (meta, format!("is a symbolic link to {target}, which ")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Entry::NotAFile(format!("is a dangling symbolic link: its target {target} does not exist")))
            }
            Err(e) => return Ok(Entry::NotAFile(format!("is a symbolic link to {target}, which cannot be read: {e}"))),
        }
    } else {
        (link, String::new())
    };
    Ok(if meta.is_file() {
        Entry::File
    } else if meta.is_dir() {
        Entry::NotAFile(format!("{prefix}is a directory, not a file"))
    } else {
        Entry::NotAFile(format!("{prefix}is not a regular file (a pipe, socket or device?)"))
    })
}

/// The files holding the weights: the single file, or every shard the index
/// names. The single file wins when both exist; a path that exists but is
/// not a file is an error unless the other one is a file.
pub(super) fn weight_files(dir: &Path) -> Result<Layout, WeightsError> {
    let single = dir.join(SINGLE_FILE);
    let index = dir.join(INDEX_FILE);
    match (entry(&single)?, entry(&index)?) {
        (Entry::File, _) => Ok(Layout { files: vec![single], index: None }),
        (_, Entry::File) => read_index(dir, index),
        (Entry::Missing, Entry::Missing) => Err(WeightsError::NoWeights { dir: dir.to_path_buf() }),
        (Entry::NotAFile(why), _) => Err(WeightsError::NotAFile { file: single, why }),
        (Entry::Missing, Entry::NotAFile(why)) => Err(WeightsError::NotAFile { file: index, why }),
    }
}

/// The shards of a sharded model, from its index file.
fn read_index(dir: &Path, index: PathBuf) -> Result<Layout, WeightsError> {
    let text = std::fs::read_to_string(&index).map_err(|source| WeightsError::Read { file: index.clone(), source })?;
    let bad = |why: String| WeightsError::Index { file: index.clone(), why };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("missing object field `weight_map`".into()))?;
    let mut shards: Vec<String> = Vec::new();
    let mut entries = Vec::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| bad(format!("`weight_map.{tensor}` must be a file name")))?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(bad(format!("`weight_map.{tensor}` = \"{file}\" must be a file in the model directory")));
        }
        if !shards.iter().any(|s| s == file) {
            shards.push(file.to_string());
        }
        entries.push((tensor.clone(), dir.join(file)));
    }
    if shards.is_empty() {
        return Err(bad("`weight_map` is empty".into()));
    }
    shards.sort();
    Ok(Layout { files: shards.into_iter().map(|s| dir.join(s)).collect(), index: Some((index, entries)) })
}
