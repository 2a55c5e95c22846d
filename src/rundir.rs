//! Run directories: `runs/{name}_{executor}_{timestamp}`, never shared by two runs.

use std::path::{Path, PathBuf};

/// Checks that a directory template uses only `{name}`, `{executor}` and `{timestamp}`.
pub(crate) fn check_format(fmt: &str) -> Result<(), String> {
    let mut rest = fmt;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            return Err(format!("unclosed '{{' in {:?}", fmt));
        };
        let key = &after[..j];
        if !matches!(key, "name" | "executor" | "timestamp") {
            return Err(format!(
                "unknown placeholder {{{}}} in {:?}; allowed: {{name}}, {{executor}}, {{timestamp}}",
                key, fmt
            ));
        }
        rest = &after[j + 1..];
    }
    if fmt.trim().is_empty() {
        return Err("the run directory format is empty".into());
    }
    Ok(())
}

/// Fills in the template.
pub fn render(fmt: &str, name: &str, executor: &str, timestamp: &str) -> String {
    fmt.replace("{name}", name).replace("{executor}", executor).replace("{timestamp}", timestamp)
}

/// Creates a fresh run directory from the template (relative to `base`); if the path is taken,
/// adds `-1`, `-2`, … so two runs never share a directory. Returns the absolute path.
pub fn create(fmt: &str, name: &str, executor: &str, base: &Path) -> std::io::Result<PathBuf> {
    let ts = chrono::Local::now().format("%Y-%m-%d-%H-%M-%S").to_string();
    let path = base.join(render(fmt, name, executor, &ts));
    // The parents this call creates, removed again if the run directory cannot be made.
    let created = match path.parent() {
        Some(parent) => create_dir_all_tracked(parent)?,
        None => Vec::new(),
    };
    let made = create_unique(&path);
    if made.is_err() {
        remove_created(&created);
    }
    made
}

/// Creates `dir` and its missing parents; returns the directories it created, outermost first
/// (on an error, removes them again).
pub(crate) fn create_dir_all_tracked(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut missing: Vec<&Path> = dir.ancestors().take_while(|p| !p.as_os_str().is_empty() && !p.exists()).collect();
    missing.reverse();
    let mut created = Vec::new();
    for d in missing {
        if let Err(e) = std::fs::create_dir(d).or_else(|e| if d.is_dir() { Ok(()) } else { Err(e) }) {
            remove_created(&created);
            return Err(e);
        }
        created.push(d.to_path_buf());
    }
    Ok(created)
}

/// Removes directories [`create_dir_all_tracked`] created, deepest first, if they are still empty.
pub(crate) fn remove_created(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        if std::fs::remove_dir(dir).is_err() {
            break;
        }
    }
}

/// Creates the directory `path`, or `path-1`, `path-2`, … if it is taken (never an existing one);
/// its parent must exist. Returns the absolute path of what it created.
pub(crate) fn create_unique(path: &Path) -> std::io::Result<PathBuf> {
    for i in 0u32.. {
        let candidate = if i == 0 {
            path.to_path_buf()
        } else {
            let mut s = path.as_os_str().to_owned();
            s.push(format!("-{}", i));
            PathBuf::from(s)
        };
        match std::fs::create_dir(&candidate) {
            Ok(()) => return std::path::absolute(&candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!()
}
