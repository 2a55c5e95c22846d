//! The build id that decides whether the engines' workers run tasks in process (`taps_native`):
//! a hash of the sources the task code is made of (build/source_id.rs), not of the commit.

#[path = "../build/source_id.rs"]
mod source_id;

use std::path::Path;

#[test]
fn the_build_id_hashes_the_sources_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write = |p: &str, text: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("src/lib.rs", "pub fn f() {}\n");
    write("apps/a/mod.rs", "//! an app\n");
    write("Cargo.toml", "[package]\n");
    write("README.md", "# taps\n");
    write("tests/t.rs", "#[test] fn t() {}\n");
    let id = source_id::hash(root);
    // Documentation, tests, build outputs and hidden files are not part of it.
    write("README.md", "# taps, documented better\n");
    write("tests/t.rs", "#[test] fn t2() {}\n");
    write("src/target/x", "build output\n");
    write("src/.hidden.swp", "an editor's file\n");
    assert_eq!(source_id::hash(root), id);
    // Any change to what is compiled is: a file's contents, a new file, a renamed one.
    write("apps/a/mod.rs", "//! an app, changed\n");
    let changed = source_id::hash(root);
    assert_ne!(changed, id);
    write("src/new.rs", "\n");
    let added = source_id::hash(root);
    assert_ne!(added, changed);
    std::fs::rename(root.join("src/new.rs"), root.join("src/other.rs")).unwrap();
    assert_ne!(source_id::hash(root), added);
    write("Cargo.toml", "[package]\nname = \"x\"\n");
    assert_ne!(source_id::hash(root), added);
}

#[test]
fn this_build_carries_the_id_of_its_checkout() {
    let here = source_id::hash(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert_eq!(format!("{:016x}", here), env!("TAPS_SOURCE_ID"));
    assert!(taps::executor::bridge::build_id().contains(env!("TAPS_SOURCE_ID")));
}
