//! The mapreduce app through the real `taps` binary: counts equal an independent sequential
//! count, every file is counted once, user data is never touched, generated data is removed,
//! chunking never makes empty map tasks, and bad input is refused before a run directory exists.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

mod common;

use common::TaskRecord;

/// Runs `taps run --app mapreduce ARGS` in `cwd`, asserts success; returns the new run dir and stdout.
fn run_ok(cwd: &Path, args: &[&str]) -> (PathBuf, String) {
    common::run_ok_with_stdout(cwd, &[&["run", "--app", "mapreduce"], args].concat())
}

/// Asserts that `taps run --app mapreduce ARGS` is rejected as bad input (see [`common::assert_bad_input`]).
fn assert_bad_input(cwd: &Path, args: &[&str], needles: &[&str]) {
    common::assert_bad_input(cwd, &[&["run", "--app", "mapreduce"], args].concat(), needles);
}

/// The reference count: read each file in turn, drop undecodable bytes, split on whitespace as
/// Python's `str.split()` does (Unicode whitespace and the separators U+001C..U+001F), char by char.
fn sequential_count(files: &[PathBuf]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes).replace('\u{FFFD}', "");
        for w in text.split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)).filter(|w| !w.is_empty())
        {
            *m.entry(w.to_string()).or_insert(0) += 1;
        }
    }
    m
}

/// Parses one CSV record of `word,count` (the word may be quoted with doubled quotes).
fn parse_csv_line(line: &str) -> (String, u64) {
    let (word, rest) = if let Some(q) = line.strip_prefix('"') {
        let mut word = String::new();
        let mut chars = q.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if chars.peek().map(|&(_, n)| n) == Some('"') {
                    word.push('"');
                    chars.next();
                } else {
                    end = Some(i + 1);
                    break;
                }
            } else {
                word.push(c);
            }
        }
        (word, &q[end.expect("closing quote")..])
    } else {
        let i = line.rfind(',').unwrap();
        (line[..i].to_string(), &line[i..])
    };
    let count = rest.strip_prefix(',').expect("comma after the word").parse().expect("count");
    (word, count)
}

/// counts.csv as (word, count) rows in file order; checks the header and the sort order.
fn read_counts(run_dir: &Path) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(run_dir.join("counts.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("word,count"));
    let rows: Vec<(String, u64)> = lines.map(parse_csv_line).collect();
    for w in rows.windows(2) {
        let ((wa, ca), (wb, cb)) = (&w[0], &w[1]);
        assert!(
            ca > cb || (ca == cb && wa < wb),
            "counts.csv not sorted by count desc, word asc: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    assert!(!run_dir.join("counts.csv.tmp~").exists(), "temporary file left behind");
    rows
}

fn assert_counts_equal(rows: &[(String, u64)], expected: &BTreeMap<String, u64>) {
    let got: BTreeMap<String, u64> = rows.iter().cloned().collect();
    assert_eq!(got.len(), rows.len(), "a word appears twice in counts.csv");
    assert_eq!(got.values().sum::<u64>(), expected.values().sum::<u64>(), "totals differ");
    assert_eq!(&got, expected, "per-word counts differ from the sequential count");
}

fn commas(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn records(run_dir: &Path) -> Vec<TaskRecord> {
    let recs = common::records(run_dir);
    assert!(
        recs.iter().all(|r| r.success == Some(true)),
        "a task failed: {:?}",
        recs.iter().find(|r| r.success != Some(true))
    );
    recs
}

/// Checks the task graph: `n_maps` map tasks without parents, one reduce task whose parents are
/// exactly the map tasks.
fn check_graph(run_dir: &Path, n_maps: usize) {
    let recs = records(run_dir);
    let maps: Vec<&TaskRecord> = recs.iter().filter(|r| r.name == "map_task").collect();
    let reduces: Vec<&TaskRecord> = recs.iter().filter(|r| r.name == "reduce_task").collect();
    assert_eq!(
        recs.len(),
        maps.len() + reduces.len(),
        "unexpected tasks: {:?}",
        recs.iter().map(|r| &r.name).collect::<Vec<_>>()
    );
    assert_eq!(maps.len(), n_maps, "map task count");
    assert_eq!(reduces.len(), 1);
    assert!(maps.iter().all(|m| m.parent_task_ids.is_empty()));
    let parents: Vec<&String> = reduces[0].parent_task_ids.iter().collect();
    let map_ids: HashSet<&String> = maps.iter().map(|m| &m.task_id).collect();
    assert_eq!(parents.len(), n_maps);
    assert_eq!(parents.into_iter().collect::<HashSet<_>>(), map_ids, "reduce's parents are the map tasks");
}

/// Deterministic pseudo-random numbers for the test's own data (independent of the app's RNG).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes `n` files of varied size and content (repeated words, several kinds of whitespace,
/// non-ASCII words, CSV-special characters) into nested directories under `dir`.
fn write_test_files(dir: &Path, n: usize, seed: u64) -> Vec<PathBuf> {
    let mut rng = XorShift(seed);
    let vocab: Vec<String> = (0..150)
        .map(|i| {
            let len = 1 + rng.below(8) as usize;
            let mut w: String = (0..len).map(|_| (b'a' + rng.below(26) as u8) as char).collect();
            match i % 25 {
                0 => w.push('é'),
                1 => w.push_str(",x"),
                2 => w.push_str("\"q\""),
                _ => {}
            }
            w
        })
        .collect();
    // Mostly spaces; also the whitespace Python splits on beyond ASCII and U+001C..U+001F, and
    // a character it does not split on (U+200B).
    let seps = [
        " ", " ", " ", " ", " ", " ", "  ", "\t", "\n", "\r\n", "\u{a0}", "\u{3000}", "\u{2028}", "\u{85}", "\x1c",
        "\x1f", "\u{200b}",
    ];
    let mut files = Vec::new();
    for i in 0..n {
        let sub = dir.join(format!("part{}", i % 3)).join(if i % 2 == 0 { "even" } else { "odd" });
        std::fs::create_dir_all(&sub).unwrap();
        let words = rng.below(3000) as usize; // some files may be tiny
        let mut text = String::new();
        for _ in 0..words {
            // Skewed: low indices are much more frequent.
            let idx = (rng.below(150) * rng.below(150) / 150) as usize;
            text.push_str(&vocab[idx]);
            text.push_str(seps[rng.below(seps.len() as u64) as usize]);
        }
        let path = sub.join(format!("file{:02}.txt", i));
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    files
}

/// Bytes and modification time of every entry under `dir` (to show it was not touched).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Option<Vec<u8>>, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let bytes = if m.is_file() { Some(std::fs::read(e.path()).unwrap()) } else { None };
            if m.is_dir() {
                stack.push(e.path());
            }
            out.insert(e.path(), (bytes, m.modified().unwrap()));
        }
    }
    out
}

#[test]
fn counts_equal_an_independent_sequential_count() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let files = write_test_files(&data, 20, 0x5eed);
    let expected = sequential_count(&files);
    assert!(expected.values().sum::<u64>() > 10_000, "test data too small to be meaningful");
    let before = snapshot(&data);

    for executor in ["process-pool", "thread-pool"] {
        let (run, stdout) =
            run_ok(tmp.path(), &["--app.data-dir", "data", "--app.map-tasks", "6", "--engine.executor", executor]);
        check_counts_run(&run, &stdout, &expected);
    }
    assert_eq!(snapshot(&data), before, "user data changed");
}

/// The checks of [`counts_equal_an_independent_sequential_count`] on one run of 20 files and 6 maps.
fn check_counts_run(run: &Path, stdout: &str, expected: &BTreeMap<String, u64>) {
    let rows = read_counts(run);
    assert_counts_equal(&rows, expected);
    let total = expected.values().sum::<u64>();
    assert!(stdout.contains(&format!("Total number of words: {}", commas(total))), "{}", stdout);
    assert!(stdout.contains("Found 20 files in"), "{}", stdout);
    // The top-10 lines are the first 10 rows of counts.csv.
    for (w, c) in rows.iter().take(10) {
        assert!(stdout.contains(&format!("> {} ({})\n", w, commas(*c))), "top word {} missing:\n{}", w, stdout);
    }
    check_graph(run, 6);
    // The timed part (Finished app) ends with the reduce, as in the reference; counts.csv is written after it.
    let at = |s: &str| stdout.find(s).unwrap_or_else(|| panic!("log lacks {:?}:\n{}", s, stdout));
    assert!(at("Total number of words") < at("Finished app (elapsed="), "{}", stdout);
    assert!(at("Finished app (elapsed=") < at("Wrote counts of"), "{}", stdout);
}

#[test]
fn generated_data_counts_files_times_words_and_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/apps/mapreduce/config.toml");
    let (run, stdout) = run_ok(tmp.path(), &["--config", config]);
    // The example config: 8 files × 2,000 words in 4 map tasks, into ./mapreduce-data.
    assert!(!tmp.path().join("mapreduce-data").exists(), "generated data was not removed");
    assert!(stdout.contains("Generated 8 files in"), "{}", stdout);
    assert!(stdout.contains("Removed generated files in"), "{}", stdout);
    assert!(stdout.contains("Total number of words: 16,000"), "{}", stdout);
    let rows = read_counts(&run);
    assert_eq!(rows.iter().map(|r| r.1).sum::<u64>(), 16_000);
    assert!(rows.iter().all(|(w, _)| (2..=10).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase())));
    check_graph(&run, 4);

    // Same seed, nested missing directory: same counts, and every directory taps created is gone.
    let (run2, _) =
        run_ok(tmp.path(), &["--config", config, "--app.data-dir", "new/deeper/data", "--app.map-tasks", "3"]);
    assert_eq!(read_counts(&run2), rows, "the same seed must generate the same words");
    assert!(!tmp.path().join("new").exists(), "directories created for generated data were not removed");

    // Without a seed the run logs the one it drew, and that seed repeats the run.
    let (run4, stdout) = run_ok(tmp.path(), &["--config", config, "--app.seed", "none"]);
    let seed = stdout.split("(seed ").nth(1).and_then(|s| s.split(')').next()).expect(&stdout);
    let (run5, _) = run_ok(tmp.path(), &["--config", config, "--app.seed", seed]);
    assert_eq!(read_counts(&run5), read_counts(&run4), "the logged seed {} did not repeat the run", seed);

    // An existing empty directory is used and kept (empty), not removed.
    std::fs::create_dir(tmp.path().join("mine")).unwrap();
    let (run3, _) = run_ok(tmp.path(), &["--config", config, "--app.data-dir", "mine", "--app.seed", "7"]);
    assert_eq!(read_counts(&run3).iter().map(|r| r.1).sum::<u64>(), 16_000);
    assert!(tmp.path().join("mine").is_dir());
    assert_eq!(std::fs::read_dir(tmp.path().join("mine")).unwrap().count(), 0);
}

#[test]
fn user_data_in_nested_dirs_is_all_counted_and_untouched() {
    // The Python suite drops the last file: 3 files × 12 words count 24 there; here 36.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("corpus");
    std::fs::create_dir_all(data.join("a/b")).unwrap();
    std::fs::create_dir_all(data.join("c")).unwrap();
    let twelve = "one two three four five six seven eight nine ten eleven twelve";
    std::fs::write(data.join("top.txt"), twelve).unwrap();
    std::fs::write(data.join("a/b/deep.txt"), twelve.replace(' ', "\n")).unwrap();
    // Undecodable bytes are dropped, not counted and not fatal: still 12 words.
    let mut latin1 = twelve.rsplit_once(' ').unwrap().0.as_bytes().to_vec();
    latin1.extend_from_slice(b" caf\xe9");
    std::fs::write(data.join("c/latin1.txt"), latin1).unwrap();
    let files: Vec<PathBuf> = ["top.txt", "a/b/deep.txt", "c/latin1.txt"].iter().map(|f| data.join(f)).collect();
    let expected = sequential_count(&files);
    assert_eq!(expected.values().sum::<u64>(), 36);
    assert_eq!(expected.get("caf"), Some(&1));
    let before = snapshot(&data);

    for map_tasks in ["1", "2", "32"] {
        let (run, stdout) = run_ok(tmp.path(), &["--app.data-dir", "corpus", "--app.map-tasks", map_tasks]);
        assert_counts_equal(&read_counts(&run), &expected);
        assert!(stdout.contains("Found 3 files in"), "{}", stdout);
        assert!(stdout.contains("Total number of words: 36"), "{}", stdout);
        assert!(!stdout.contains("Removed generated files"), "{}", stdout);
        check_graph(&run, map_tasks.parse::<usize>().unwrap().min(3));
    }
    assert_eq!(snapshot(&data), before, "user data changed");
}

#[test]
fn map_tasks_none_is_one_task_per_file_and_never_more_tasks_than_files() {
    let tmp = tempfile::tempdir().unwrap();
    let files = write_test_files(&tmp.path().join("data"), 7, 99);
    let expected = sequential_count(&files);

    let (run, stdout) = run_ok(tmp.path(), &["--app.data-dir", "data", "--app.map-tasks", "none"]);
    check_graph(&run, 7);
    assert!(stdout.contains("Submitted 7 map tasks over 7 input files (1..1 files per task)"), "{}", stdout);
    assert_counts_equal(&read_counts(&run), &expected);

    let (run, stdout) = run_ok(tmp.path(), &["--app.data-dir", "data", "--app.map-tasks", "50"]);
    check_graph(&run, 7);
    assert!(stdout.contains("Submitted 7 map tasks over 7 input files (1..1 files per task)"), "{}", stdout);
    assert_counts_equal(&read_counts(&run), &expected);

    // Fewer tasks than files: every task gets at least one file.
    let (run, stdout) = run_ok(tmp.path(), &["--app.data-dir", "data", "--app.map-tasks", "3"]);
    check_graph(&run, 3);
    let line = stdout.lines().find(|l| l.contains("Submitted 3 map tasks over 7 input files")).expect("submit line");
    let range = line.rsplit_once('(').unwrap().1;
    let min: u64 = range.split("..").next().unwrap().parse().unwrap();
    assert!(min >= 1, "an empty map task: {}", line);
    assert_counts_equal(&read_counts(&run), &expected);
}

#[test]
fn bad_input_exits_2_before_a_run_directory_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    std::fs::create_dir(cwd.join("empty")).unwrap();
    std::fs::create_dir_all(cwd.join("only-dirs/sub")).unwrap();
    std::fs::create_dir(cwd.join("full")).unwrap();
    std::fs::write(cwd.join("full/keep.txt"), "precious words").unwrap();
    let before = snapshot(cwd);

    assert_bad_input(cwd, &["--app.data-dir", "missing"], &["app.data_dir", "missing", "does not exist"]);
    assert_bad_input(cwd, &["--app.data-dir", "empty"], &["app.data_dir", "empty", "no files"]);
    assert_bad_input(cwd, &["--app.data-dir", "only-dirs"], &["app.data_dir", "no files"]);
    assert_bad_input(cwd, &["--app.data-dir", "full/keep.txt"], &["not a directory"]);
    assert_bad_input(
        cwd,
        &["--app.data-dir", "full", "--app.generate", "true"],
        &["app.data_dir", "full", "not empty"],
    );
    assert_bad_input(
        cwd,
        &["--app.data-dir", "full", "--app.map-tasks", "0"],
        &["app.map_tasks", "at least 1", "none"],
    );
    assert_bad_input(
        cwd,
        &["--app.data-dir", "gen", "--app.generate", "true", "--app.generated-files", "0"],
        &["app.generated_files"],
    );
    assert_bad_input(cwd, &[], &["app.data_dir", "required"]);
    assert_bad_input(cwd, &["--app.data-dir", "full", "--app.map-tasks", "many"], &["map-tasks", "many"]);

    assert!(!cwd.join("runs").exists(), "runs/ created for bad input");
    assert!(!cwd.join("gen").exists(), "generated data for a rejected config");
    assert_eq!(snapshot(cwd), before, "bad input changed files");
}

#[test]
fn the_run_directory_inside_data_dir_is_not_counted() {
    // data-dir = the launch directory, which will hold runs/<this run>/ (log, records) too.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("words.txt"), "alpha beta alpha").unwrap();
    let (run, stdout) = run_ok(tmp.path(), &["--app.data-dir", "."]);
    assert!(stdout.contains("Found 1 files in"), "{}", stdout);
    let rows = read_counts(&run);
    assert_eq!(rows, vec![("alpha".to_string(), 2), ("beta".to_string(), 1)]);
}
