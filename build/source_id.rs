//! The build id of taps' task code (build.rs, `taps::executor::bridge::build_id`): a hash of the
//! sources a build is made of, so that a commit changing only documentation, tests or scripts
//! leaves it as it was. Included by build.rs and tests/build_id.rs.

use std::path::{Path, PathBuf};

/// What the task code of a build is made of: a taps binary and the `taps_native` module (the
/// engines' in-process runner) run the same tasks when these are the same. Documentation, tests,
/// scripts and the Python bridge (whose frames are versioned by the protocol) are not in it.
pub const SOURCES: &[&str] =
    &["src", "apps", "launchers", "python/taps-native", "Cargo.toml", "Cargo.lock", "build.rs", "build"];

/// FNV-1a (64 bits) of the relative paths and contents of every file of [`SOURCES`] under `root`,
/// in sorted order (build outputs excluded).
pub fn hash(root: &Path) -> u64 {
    fn files(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let (path, name) = (e.path(), e.file_name());
            if name == "target" || name.to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                files(&path, &rel.join(&name), out);
            } else {
                out.push(rel.join(&name));
            }
        }
    }
    let mut all = Vec::new();
    for s in SOURCES {
        let p = root.join(s);
        if p.is_dir() {
            files(&p, Path::new(s), &mut all)
        } else if p.is_file() {
            all.push(PathBuf::from(s))
        }
    }
    all.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for f in all {
        eat(f.to_string_lossy().as_bytes());
        eat(&[0]);
        eat(&std::fs::read(root.join(&f)).unwrap_or_default());
        eat(&[0]);
    }
    h
}
