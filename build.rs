use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "build/source_id.rs"]
mod source_id;

fn main() {
    let out = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(commit) = out("git", &["rev-parse", "--short=12", "HEAD"]) {
        let dirty = out("git", &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        println!("cargo:rustc-env=TAPS_GIT_COMMIT={}{}", commit, if dirty { "-dirty" } else { "" });
        // A new commit moves HEAD (detached) or the branch it names, and rewrites the index; in a
        // worktree these live under its own git directory, not `.git/` (a file there).
        let path = |args: &[&str]| out("git", args).map(PathBuf::from);
        if let (Some(git), Some(common)) = (
            path(&["rev-parse", "--absolute-git-dir"]),
            path(&["rev-parse", "--path-format=absolute", "--git-common-dir"]),
        ) {
            for p in [git.join("HEAD"), git.join("index"), common.join("packed-refs")] {
                watch(&p);
            }
            if let Some(branch) = out("git", &["symbolic-ref", "-q", "HEAD"]) {
                watch(&common.join(branch));
            }
        }
    }
    println!("cargo:rustc-env=TAPS_SOURCE_ID={:016x}", source_id::hash(Path::new(".")));
    for s in source_id::SOURCES {
        // A directory is scanned for any change (and the dirty flag above follows edits).
        println!("cargo:rerun-if-changed={}", s);
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = out(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TAPS_RUSTC_VERSION={}", version);
}

/// Reruns this script when `p` changes, if it exists (a missing path would rerun it every build).
fn watch(p: &Path) {
    if p.exists() {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
