//! Test inputs on disk: the fixtures, the corpora and the policy files the tests walk.

use std::path::{Path, PathBuf};

/// Every file under `dir` (recursively) whose name ends in one of `exts` (every file when `exts` is empty),
/// sorted; nothing when `dir` does not exist.
pub fn under(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if exts.is_empty() || exts.iter().any(|x| p.to_string_lossy().ends_with(x)) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
