//! The layers of taps, and the check that imports point one way (DESIGN.md, "Layers"):
//!
//! ```text
//! core        task, engine, data, record, protocol, worker, options, plugins, rundir, logging, app, shell
//! executors   src/executor/**
//! apps        apps/**            launchers   launchers/**     (neither names the other)
//! harness     everything else in src/: config, run, cli, bench, submit, report, catalogue, ...
//! ```
//!
//! A file may name (`crate::x`) modules of its own layer or of lower ones only. The test reads
//! the sources, so it fails on a back-import however it is written (`use`, a path in code, a
//! grouped `use crate::{…}`); comments and doc links do not count.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const CORE: &[&str] = &[
    "task",
    "engine",
    "data",
    "record",
    "protocol",
    "worker",
    "options",
    "plugins",
    "rundir",
    "logging",
    "app",
    "shell",
    "shm",
    "spin",
    "plot",
    "redis_store",
];

/// Macros exported at the crate root by core modules.
const CORE_MACROS: &[&str] = &[
    "run_info",
    "app_info",
    "task_arg",
    "opt_enum",
    "options",
    "plugin",
    "__first_doc",
    "__is_required",
    "__is_skip_default",
    "__options_default",
    "__option_default",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Core,
    Executors,
    Apps,
    Launchers,
    Harness,
}

impl Layer {
    fn rank(self) -> u8 {
        match self {
            Layer::Core => 0,
            Layer::Executors => 1,
            Layer::Apps | Layer::Launchers => 2,
            Layer::Harness => 3,
        }
    }

    /// Whether a file of layer `self` may name a module of layer `other`.
    fn may_use(self, other: Layer) -> bool {
        self == other || other.rank() < self.rank()
    }
}

/// The layer of a top-level module of the crate (`crate::name`).
fn module_layer(name: &str) -> Layer {
    match name {
        "executor" => Layer::Executors,
        "apps" => Layer::Apps,
        "launchers" => Layer::Launchers,
        n if CORE.contains(&n) || CORE_MACROS.contains(&n) => Layer::Core,
        _ => Layer::Harness,
    }
}

/// The layer of a source file, from its path below the package root.
fn file_layer(rel: &Path) -> Layer {
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    match parts.first().map(String::as_str) {
        Some("apps") => Layer::Apps,
        Some("launchers") => Layer::Launchers,
        Some("src") => match parts.get(1).map(String::as_str) {
            Some("executor") => Layer::Executors,
            Some(f) => module_layer(f.trim_end_matches(".rs")),
            None => Layer::Harness,
        },
        _ => Layer::Harness,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments (line comments, doc comments and block comments).
fn code_only(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut in_block = 0;
    for line in src.lines() {
        let mut l = line;
        let mut kept = String::new();
        loop {
            if in_block > 0 {
                match l.find("*/") {
                    Some(i) => {
                        in_block -= 1;
                        l = &l[i + 2..];
                    }
                    None => break,
                }
            } else {
                let lc = l.find("//");
                let bc = l.find("/*");
                match (lc, bc) {
                    (Some(a), Some(b)) if b < a => {
                        kept.push_str(&l[..b]);
                        in_block += 1;
                        l = &l[b + 2..];
                    }
                    (None, Some(b)) => {
                        kept.push_str(&l[..b]);
                        in_block += 1;
                        l = &l[b + 2..];
                    }
                    (Some(a), _) => {
                        kept.push_str(&l[..a]);
                        break;
                    }
                    (None, None) => {
                        kept.push_str(l);
                        break;
                    }
                }
            }
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// Every top-level module a piece of code names through `crate::`, with its line number.
fn named_modules(code: &str) -> Vec<(usize, String)> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            // `$crate::` in macros names the defining crate, like `crate::`.
            let after = &rest[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name = ident(item.trim());
                    if !name.is_empty() {
                        out.push((n + 1, name));
                    }
                }
            } else {
                let name = ident(after);
                if !name.is_empty() {
                    out.push((n + 1, name));
                }
            }
            rest = after;
        }
    }
    out
}

fn violations(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for d in ["src", "apps", "launchers"] {
        rust_files(&root.join(d), &mut files);
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let rel = f.strip_prefix(root).unwrap();
        if rel.starts_with("src/bin") || rel == Path::new("src/lib.rs") {
            continue;
        }
        let layer = file_layer(rel);
        let code = code_only(&std::fs::read_to_string(&f).unwrap());
        let mut seen = BTreeSet::new();
        for (line, m) in named_modules(&code) {
            let target = module_layer(&m);
            if !layer.may_use(target) && seen.insert(m.clone()) {
                out.push(format!("{}:{}: {:?} names crate::{} ({:?})", rel.display(), line, layer, m, target));
            }
        }
    }
    out
}

#[test]
fn imports_point_from_the_harness_down_to_the_core() {
    let v = violations(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(v.is_empty(), "{} back-import(s):\n{}", v.len(), v.join("\n"));
}

#[test]
fn the_check_sees_a_back_import() {
    let dir = tempfile::tempdir().unwrap();
    let write = |p: &str, s: &str| {
        let p = dir.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    write(
        "src/engine.rs",
        "use crate::task::Task;\n// crate::config in a comment is fine\nfn f() { crate::config::load(); }\n",
    );
    write("src/executor/x.rs", "use crate::{engine, apps};\n");
    write("apps/a/mod.rs", "use crate::launchers::job;\nuse crate::executor::thread_pool;\n");
    write("launchers/l.rs", "/* crate::run */ use crate::worker;\n");
    let v = violations(dir.path());
    assert_eq!(
        v,
        [
            "apps/a/mod.rs:1: Apps names crate::launchers (Launchers)",
            "src/engine.rs:3: Core names crate::config (Harness)",
            "src/executor/x.rs:1: Executors names crate::apps (Apps)",
        ]
    );
}
