//! `taps report`: figures worked out by hand on a fixed run, snapshots of the table and CSV, the
//! Python suite's real run directories, charts (PNG, SVG), the HTML page in headless chromium,
//! runs that cannot be reported, and fresh runs of every executor.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{show, taps};

const TAPS: &str = env!("CARGO_BIN_EXE_taps");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `taps report ARGS` from the package root (so fixture paths print as given, relative).
fn report(args: &[&str]) -> Output {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    taps(root(), &all)
}

fn report_ok(args: &[&str]) -> String {
    let out = report(args);
    assert!(out.status.success(), "taps report {:?}: {}", args, show(&out));
    assert!(out.stderr.is_empty(), "taps report {:?} warned: {}", args, show(&out));
    String::from_utf8(out.stdout).unwrap()
}

const HAND: &str = "tests/fixtures/report/hand";
const PY: [&str; 3] = [
    "tests/fixtures/pytaps-runs/cholesky_process-pool_2026-12-01-17-04-24",
    "tests/fixtures/pytaps-runs/synthetic-bag_dask_2026-12-01-17-04-27",
    "tests/fixtures/pytaps-runs/synthetic-diamond_thread-pool_2026-12-01-17-04-21",
];

/// Compares with `tests/fixtures/report/expected/NAME`; `TAPS_BLESS=1` writes it instead.
fn snapshot(name: &str, got: &str) {
    let path = root().join("tests/fixtures/report/expected").join(name);
    if std::env::var_os("TAPS_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {} (create it with TAPS_BLESS=1 cargo test --test report)", path.display(), e));
    assert!(want == got, "{} differs (check, then TAPS_BLESS=1 to update):\n--- got ---\n{}", path.display(), got);
}

#[test]
fn makespan_overhead_and_its_parts_match_the_figures_worked_out_by_hand() {
    let json: serde_json::Value = serde_json::from_str(&report_ok(&["--format", "json", HAND])).unwrap();
    let run = &json["runs"][0];
    let f = |p: &str| run.pointer(p).unwrap_or_else(|| panic!("no {} in {}", p, run)).as_f64().unwrap();
    // The fixture's six records (driver host node0; times in seconds):
    //   a first   submit 100    exec 100.5–101.75   body 100.625–101.625   received 102
    //   f fails   submit 100.5  never ran (ValueError)                      received 101
    //   g remote  submit 100.5  on node1, whose clock is 1000 s ahead: exec 1101–1102.5, body 1101.25–1102.25, received 102
    //   c second  parent a      exec 102.125–     body 102.1875–103.1875   received 103.5
    //   b second  parent a      exec 102.25–      body 102.5–104.5         received 104.75
    //   d last    parents b, c  exec 105–         body 105–105.5           received 106
    // makespan = last received − first submit = 106 − 100.
    assert_eq!(f("/makespan_s"), 6.0);
    assert_eq!(run["makespan_from"], "records");
    // The app's own elapsed time comes from the fixture's log.txt line `Finished app (elapsed=6.100s)`.
    assert_eq!(f("/app_elapsed_s"), 6.1);
    assert_eq!((run["tasks"].as_u64(), run["failed"].as_u64()), (Some(6), Some(1)));
    assert_eq!(f("/throughput_per_s"), 1.0);
    // ready = latest parent received (a: 100, g: 100.5, c, b: 102, d: max(104.75, 103.5) = 104.75).
    // wait  = ready − submit:            a 0, g 0, c 1.75, b 1.75, d 4.25    → median 1.75
    // queue = exec start − ready (same host only): a .5, c .125, b .25, d .25 → median (.25 + .25) / 2
    // input = body start − exec start:   a .125, g .25, c .0625, b .25, d 0  → median .125
    // body:                              a 1, g 1, c 1, b 2, d .5            → median 1
    // result = received − body end (same host only): a .375, c .3125, b .25, d .5 → median (.3125 + .375) / 2
    // overhead = received − ready − body: a 1, g (102 − 100.5) − 1 = .5, c .5, b .75, d .75
    //   → median .75, p95 (nearest rank: 5th of 5) 1
    assert_eq!(f("/parts/wait/median"), 1.75);
    assert_eq!(f("/parts/queue/median"), 0.25);
    assert_eq!(f("/parts/input/median"), 0.125);
    assert_eq!(f("/parts/body/median"), 1.0);
    assert_eq!(f("/parts/result/median"), 0.34375);
    assert_eq!(f("/parts/overhead/median"), 0.75);
    assert_eq!(f("/parts/overhead/p95"), 1.0);
    assert_eq!(run["remote_tasks"], 1, "g's queue and result cross two clocks: not split");
    assert_eq!((run["bytes_inline"].as_u64(), run["bytes_by_reference"].as_u64()), (Some(360), Some(1000)));
    assert_eq!(run["data"], "object-size/file");
    let second = &run["by_name"].as_array().unwrap().iter().find(|n| n["name"] == "second").unwrap()["parts"];
    assert_eq!(second["overhead"]["median"], 0.625, "c .5 and b .75");
}

#[test]
fn the_terminal_table_and_the_csv_match_their_snapshots() {
    let args = [HAND, "tests/fixtures/report/hand-2", "tests/fixtures/report/hand-3", PY[0], PY[1], PY[2]];
    snapshot("table.txt", &report_ok(&args));
    let csv = report_ok(&[&["--format", "csv"][..], &args].concat());
    snapshot("report.csv", &csv);
    // The sweep joins on the first column: the run dirs exactly as given.
    let firsts: Vec<&str> = csv.lines().map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(firsts[0], "run_dir");
    assert_eq!(&firsts[1..], &args[..]);
    snapshot("report.md", &report_ok(&[&["--format", "markdown"][..], &args].concat()));
}

#[test]
fn repeated_runs_of_one_configuration_fold_into_median_and_range() {
    let json: serde_json::Value = serde_json::from_str(&report_ok(&[
        "--format",
        "json",
        HAND,
        "tests/fixtures/report/hand-2",
        PY[1],
        "tests/fixtures/report/hand-3",
    ]))
    .unwrap();
    let groups = json["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{:#}", json["groups"]);
    let g = groups.iter().find(|g| g["executor"] == "process-pool").unwrap();
    // hand, hand-2 and hand-3 differ only in d's received time: 106, 108, 107.
    assert_eq!(g["runs"], serde_json::json!([0, 1, 3]));
    assert_eq!(g["makespan_s"], serde_json::json!({"median": 7.0, "min": 6.0, "max": 8.0}));
    let text = report_ok(&[HAND, "tests/fixtures/report/hand-2", "tests/fixtures/report/hand-3"]);
    assert!(text.contains("7.000 [6.000–8.000]"), "{}", text);
}

/// Greatest number of intervals open at one time.
fn depth(mut iv: Vec<(f64, f64)>) -> usize {
    iv.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut ends: Vec<f64> = Vec::new();
    let mut best = 0;
    for (s, e) in iv {
        ends.retain(|&x| x > s);
        ends.push(e);
        best = best.max(ends.len());
    }
    best
}

#[test]
fn the_python_suites_runs_are_read_with_lanes_packed_per_host_and_bytes_na() {
    let json: serde_json::Value = serde_json::from_str(&report_ok(&[&["--format", "json"][..], &PY].concat())).unwrap();
    for (run, (tasks, app_elapsed)) in
        json["runs"].as_array().unwrap().iter().zip([(30, 0.361), (50, 1.889), (22, 0.013)])
    {
        assert_eq!(run["suite"], "python");
        assert_eq!(run["tasks"], tasks);
        assert_eq!(run["failed"], 0);
        assert_eq!(run["makespan_s"].as_f64(), Some(app_elapsed), "the app's elapsed in log.txt");
        assert_eq!(run["makespan_from"], "log.txt");
        assert!(run["bytes_inline"].is_null() && run["bytes_by_reference"].is_null(), "{}", run);
    }
    let table = report_ok(&PY);
    let runs_table = table.split("\n\n").next().unwrap();
    assert_eq!(
        runs_table
            .lines()
            .filter(|l| l.starts_with("tests/fixtures/pytaps-runs/") && l.ends_with("n/a           n/a"))
            .count(),
        3,
        "{}",
        runs_table
    );
    // Lanes: no two tasks of a lane overlap, and there are as many lanes as tasks ever ran at once.
    for dir in PY {
        let run = taps::report::load_run(&root().join(dir)).unwrap();
        let (lanes, _) = taps::report::charts::lanes(&run);
        let mut all = Vec::new();
        for l in &lanes {
            assert!(l.label.starts_with("vm #"), "{}", l.label);
            for w in l.bars.windows(2) {
                assert!(w[0].1 <= w[1].0, "{}: overlapping tasks in lane {}", dir, l.label);
            }
            all.extend(l.bars.iter().map(|b| (b.0, b.1)));
        }
        assert_eq!(all.len(), run.records.len());
        assert_eq!(lanes.len(), depth(all), "{}", dir);
    }
}

#[test]
fn a_host_with_another_clock_is_shifted_onto_the_drivers_in_the_gantt_chart() {
    let run = taps::report::load_run(&root().join(HAND)).unwrap();
    // g: driver midpoint (100.5 + 102) / 2 = 101.25, node1's (1101 + 1102.5) / 2 = 1101.75.
    assert_eq!(taps::report::charts::clock_offsets(&run)["node1"], -1000.5);
    let (lanes, names) = taps::report::charts::lanes(&run);
    let labels: Vec<&str> = lanes.iter().map(|l| l.label.as_str()).collect();
    assert_eq!(labels, ["pid-1", "pid-2", "pid-3"]);
    let g = names.iter().position(|n| n == "remote").unwrap();
    assert_eq!(lanes[2].bars, vec![(0.5, 2.0, g)]);
}

fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {}", path.display(), e));
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    assert_eq!(&b[12..16], b"IHDR");
    (u32::from_be_bytes(b[16..20].try_into().unwrap()), u32::from_be_bytes(b[20..24].try_into().unwrap()))
}

/// Checks that `text` is well-formed XML (tags nest and close; attribute values quoted) with an
/// `<svg>` root, and returns the number of elements.
fn svg_elements(text: &str) -> usize {
    let body = text.trim_start();
    let body = if body.starts_with("<?xml") { &body[body.find("?>").unwrap() + 2..] } else { body };
    let mut stack: Vec<String> = Vec::new();
    let mut count = 0;
    let mut rest = body.trim();
    assert!(rest.starts_with("<svg"), "not an SVG root: {:.80}", rest);
    while let Some(i) = rest.find('<') {
        let close = rest[i..].find('>').expect("unterminated tag") + i;
        let tag = &rest[i + 1..close];
        assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes in <{}>", tag);
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.trim()), "mismatched </{}>", name);
        } else if !tag.starts_with('!') && !tag.starts_with('?') {
            count += 1;
            if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap().to_string());
            }
        }
        rest = &rest[close + 1..];
        if stack.is_empty() {
            break;
        }
    }
    assert!(stack.is_empty(), "unclosed elements {:?}", stack);
    assert!(rest.trim().is_empty(), "content after the root: {:.80}", rest);
    count
}

#[test]
fn charts_are_written_as_readable_png_and_svg() {
    let out = tempfile::tempdir().unwrap();
    let plots = out.path().join("plots");
    let plots_s = plots.to_str().unwrap();
    report_ok(&["--plots", plots_s, HAND, "tests/fixtures/report/hand-2", PY[1]]);
    let mut names: Vec<String> =
        std::fs::read_dir(&plots).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let stems = [
        "hand-2-gantt",
        "hand-2-overhead",
        "hand-gantt",
        "hand-overhead",
        "makespan",
        "synthetic-bag_dask_2026-12-01-17-04-27-gantt",
        "synthetic-bag_dask_2026-12-01-17-04-27-overhead",
    ];
    let want: Vec<String> = stems.iter().flat_map(|s| [format!("{}.png", s), format!("{}.svg", s)]).collect();
    assert_eq!(names, want);
    assert_eq!(png_size(&plots.join("hand-overhead.png")), (900, 600));
    assert_eq!(png_size(&plots.join("makespan.png")), (900, 500));
    assert_eq!(png_size(&plots.join("hand-gantt.png")), (900, 160 + 26 * 3), "three worker lanes");
    for s in stems {
        let svg = std::fs::read_to_string(plots.join(format!("{}.svg", s))).unwrap();
        assert!(svg_elements(&svg) > 20, "{}.svg draws little: {}", s, svg);
    }
    // The Gantt chart draws one bar per task that ran (5 in the hand-made run).
    let gantt = std::fs::read_to_string(plots.join("hand-gantt.svg")).unwrap();
    assert!(gantt.contains("pid-3") && gantt.contains("remote"), "lanes and legend are labelled");
}

fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser"] {
        if Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return c;
        }
    }
    panic!("chromium is not installed: run scripts/install-deps.sh (it installs Debian's chromium)");
}

fn headless(profile: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Runs `c` with a hang guard of 120 s.
fn output_within(mut c: Command, what: &str) -> Output {
    let mut child = c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    common::output_or_kill(&mut child, 120, what)
}

#[test]
fn the_html_page_opens_in_headless_chromium_with_every_row_and_chart() {
    let out = tempfile::tempdir().unwrap();
    let page = out.path().join("report.html");
    let args = [HAND, "tests/fixtures/report/hand-2", PY[0], PY[2]];
    let json: serde_json::Value = serde_json::from_str(&report_ok(
        &[&["--format", "json", "--html", page.to_str().unwrap()][..], &args].concat(),
    ))
    .unwrap();
    let html = std::fs::read_to_string(&page).unwrap();
    for net in ["<script", "src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(net), "the page must not load anything: {}", net);
    }
    let url = format!("file://{}", page.display());
    let mut c = headless(&out.path().join("profile"));
    c.args(["--dump-dom", &url]);
    let dom = output_within(c, "chromium --dump-dom");
    assert!(dom.status.success(), "chromium --dump-dom: {}", show(&dom));
    let dom = String::from_utf8(dom.stdout).unwrap();
    // Every table row: runs, parts, per name (one row per name of each run), comparison.
    let names: usize = json["runs"].as_array().unwrap().iter().map(|r| r["by_name"].as_array().unwrap().len()).sum();
    let groups = json["groups"].as_array().unwrap().len();
    let rows = dom.matches("<tr>").count();
    assert_eq!(rows, (1 + args.len()) * 2 + (1 + names) + (1 + groups), "rows in the DOM");
    for a in args {
        assert!(dom.matches(&format!("<td>{}</td>", a)).count() >= 3, "{} missing from the tables", a);
    }
    // Two charts per run and the makespan chart, each an SVG with drawn elements.
    let svgs: Vec<&str> = dom.split("<svg").skip(1).map(|s| &s[..s.find("</svg>").unwrap()]).collect();
    assert_eq!(svgs.len(), 2 * args.len() + 1);
    for s in &svgs {
        assert!(s.matches("<rect").count() + s.matches("<polyline").count() > 3, "an empty SVG: {:.200}", s);
    }
    let shot = out.path().join("shot.png");
    let mut c = headless(&out.path().join("profile2"));
    c.args([&format!("--screenshot={}", shot.display()), "--window-size=1200,2400", &url]);
    let o = output_within(c, "chromium --screenshot");
    assert!(o.status.success(), "chromium --screenshot: {}", show(&o));
    assert_eq!(png_size(&shot), (1200, 2400));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Asserts one `taps: error:` line with every needle, exit 2.
fn assert_error(args: &[&str], needles: &[&str]) {
    let out = report(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{:?}: {}", args, show(&out));
    assert_eq!(err.lines().count(), 1, "{}", err);
    assert!(err.starts_with("taps: error: "), "{}", err);
    for n in needles {
        assert!(err.contains(n), "{:?} should mention {:?}", err, n);
    }
    assert!(out.stdout.is_empty(), "nothing printed for bad input");
}

#[test]
fn dirs_that_cannot_be_reported_get_one_line_each_never_a_panic() {
    let t = tempfile::tempdir().unwrap();
    let d = |n: &str| t.path().join(n);
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    // Still running: the log has no end yet.
    copy_dir(&root().join(HAND), &d("running"));
    std::fs::write(d("running/log.txt"), "[2026-12-02 07:00:00.000] RUN   (taps.run) > Running app...\n").unwrap();
    // A torn last record.
    copy_dir(&root().join(HAND), &d("torn"));
    let mut recs = std::fs::read_to_string(d("torn/tasks.jsonl")).unwrap();
    recs.push_str("{\"task_id\": \"x\", \"na");
    std::fs::write(d("torn/tasks.jsonl"), recs).unwrap();
    // A run that wrote no records, and a job not started.
    copy_dir(&root().join(HAND), &d("norec"));
    std::fs::remove_file(d("norec/tasks.jsonl")).unwrap();
    copy_dir(&root().join(HAND), &d("queued"));
    std::fs::remove_file(d("queued/log.txt")).unwrap();
    std::fs::write(d("queued/job.sh"), "#!/bin/sh\n").unwrap();
    std::fs::create_dir(d("empty")).unwrap();

    assert_error(&[&s(&d("missing"))], &["missing: no such directory"]);
    assert_error(&[&s(&d("empty"))], &["not a run directory (no config.toml)"]);
    assert_error(&[&s(&d("running"))], &["still running", "log.txt"]);
    assert_error(&[&s(&d("torn"))], &["tasks.jsonl:7: invalid record"]);
    assert_error(&[&s(&d("norec"))], &["no tasks.jsonl"]);
    assert_error(&[&s(&d("queued"))], &["not started", "taps status"]);
    assert_error(&[&s(&d("empty")), &s(&d("torn"))], &["no config.toml", "tasks.jsonl:7"]);
    // With a good run, the others are skipped with a warning each and the good one is reported.
    let out = report(&["--format", "csv", HAND, &s(&d("running")), &s(&d("empty"))]);
    assert!(out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 2, "{}", err);
    assert!(err.lines().all(|l| l.starts_with("taps: warning: skipped ")), "{}", err);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    // Bad outputs: nothing written.
    assert_error(&["--html", &s(&d("nodir/r.html")), HAND], &["--html", "does not exist"]);
    assert_error(&["--html", &s(&d("empty")), HAND], &["is a directory"]);
    std::fs::write(d("file"), "x").unwrap();
    assert_error(&["--plots", &s(&d("file")), HAND], &["--plots", "not a directory"]);
    assert_error(&["--format", "xml", HAND], &["xml", "csv, json, markdown"]);
    assert!(!d("nodir").exists());
}

#[test]
fn fresh_runs_of_every_executor_are_reported() {
    let t = tempfile::tempdir().unwrap();
    let config = root().join("apps/synthetic/config.toml");
    let base = ["run", "-c", config.to_str().unwrap(), "--app.task-count", "20"];
    for ex in [
        &["--engine.executor", "thread-pool"][..],
        &["--engine.executor", "process-pool"],
        &["--engine.executor", "mpi", "--engine.executor.ranks", "3"],
    ] {
        let mut c = Command::new(TAPS);
        c.current_dir(t.path())
            .args(base)
            .args(ex)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_mpi_yield_when_idle", "1")
            .env_remove("TAPS_WORKER");
        let out = output_within(c, "taps run");
        assert!(out.status.success(), "taps run {:?}: {}", ex, show(&out));
    }
    // Sorted by name: synthetic_mpi_…, synthetic_process-pool_…, synthetic_thread-pool_….
    let dirs = common::run_dirs(t.path());
    let dir_args: Vec<&str> = dirs.iter().map(|d| d.to_str().unwrap()).collect();
    let mut c = Command::new(TAPS);
    c.arg("report").args(["--format", "json"]).args(&dir_args);
    let out = c.output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", show(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for (run, (ex, worker)) in runs.iter().zip([("mpi", "rank-"), ("process-pool", "pid-"), ("thread-pool", "thread-")])
    {
        assert_eq!(run["executor"], ex);
        assert_eq!(run["status"], "finished");
        assert_eq!(run["suite"], "taps");
        let dir = Path::new(run["run_dir"].as_str().unwrap());
        let recs = common::records(dir);
        assert_eq!(run["tasks"].as_u64(), Some(recs.len() as u64));
        assert_eq!(run["failed"], 0);
        assert!(run["makespan_s"].as_f64().unwrap() > 0.0, "{}", run);
        assert!(run["parts"]["overhead"]["median"].as_f64().unwrap() > 0.0, "{}", run);
        let inline: u64 = recs.iter().map(|r| r.bytes_inline).sum();
        assert_eq!(run["bytes_inline"].as_u64(), Some(inline));
        let (lanes, _) = taps::report::charts::lanes(&taps::report::load_run(dir).unwrap());
        let labels: Vec<&str> = lanes.iter().map(|l| l.label.as_str()).collect();
        assert!(labels.iter().all(|l| l.starts_with(worker)), "{}: {:?}", ex, labels);
    }
    assert_eq!(json["groups"].as_array().unwrap().len(), 3);
    let page = t.path().join("fresh.html");
    let plots = t.path().join("plots");
    let mut c = Command::new(TAPS);
    c.arg("report").args(["--html", page.to_str().unwrap(), "--plots", plots.to_str().unwrap()]).args(&dir_args);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(png_size(&plots.join("makespan.png")), (900, 500));
    assert!(std::fs::read_to_string(&page).unwrap().matches("<svg").count() == 7);
}
