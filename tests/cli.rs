//! `taps run` configuration: layering, round trip, help, and every class of bad input.

mod common;

use common::*;

const BAG: &[&str] =
    &["--app", "synthetic", "--app.structure", "bag", "--app.task-count", "3", "--app.bag-max-running", "2"];

fn args<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["run"];
    v.extend_from_slice(base);
    v.extend_from_slice(more);
    v
}

fn read_config(run_dir: &std::path::Path) -> toml::Table {
    toml::from_str(&std::fs::read_to_string(run_dir.join("config.toml")).unwrap()).unwrap()
}

#[test]
fn files_layer_in_order_and_cli_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("a.toml"),
        "[app]\nname = \"synthetic\"\nstructure = \"reduce\"\ntask_count = 4\ntask_sleep = 0.0\n\n\
         [engine.executor]\nname = \"thread-pool\"\nmax_threads = 1\n",
    )
    .unwrap();
    std::fs::write(d.join("b.toml"), "[app]\ntask_count = 6\nwarmup_tasks = 2\n").unwrap();
    // One file.
    let one = run_ok(d, &["run", "-c", "a.toml"]);
    assert_eq!(records(&one).len(), 4 + 1);
    // Two files: the second overrides task_count and adds warmups.
    let two = run_ok(d, &["run", "--config", "a.toml", "b.toml"]);
    assert_eq!(records(&two).len(), 2 + 6 + 1);
    // CLI beats both files; dashes and underscores both work.
    let cli =
        run_ok(d, &["run", "-c", "a.toml", "b.toml", "--app.task_count", "3", "--engine.executor.max-threads", "2"]);
    let cfg = read_config(&cli);
    assert_eq!(cfg["app"]["task_count"].as_integer(), Some(3));
    assert_eq!(cfg["app"]["warmup_tasks"].as_integer(), Some(2));
    assert_eq!(cfg["engine"]["executor"]["max_threads"].as_integer(), Some(2));
    assert_eq!(records(&cli).len(), 2 + 3 + 1);
}

#[test]
fn written_config_reproduces_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let first = run_ok(
        d,
        &args(
            BAG,
            &[
                "--app.seed",
                "7",
                "--app.task-data-bytes",
                "100",
                "--engine.filter",
                "object-size",
                "--engine.filter.min-size",
                "10",
                "--engine.transformer",
                "file",
                "--run.env-vars",
                r#"{"TAPS_TEST_VAR": "x"}"#,
                "--logging.file-level",
                "DEBUG",
            ],
        ),
    );
    let text = std::fs::read_to_string(first.join("config.toml")).unwrap();
    let path = first.join("config.toml");
    let second = run_ok(d, &["run", "-c", path.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(second.join("config.toml")).unwrap(), text);
    let cfg = read_config(&first);
    assert_eq!(cfg["engine"]["filter"]["name"].as_str(), Some("object-size"));
    assert_eq!(cfg["engine"]["filter"]["max_size"].as_float(), Some(f64::INFINITY));
    assert_eq!(cfg["run"]["env_vars"]["TAPS_TEST_VAR"].as_str(), Some("x"));
    // None survives the round trip (it is written as "none", not dropped to the default).
    assert_eq!(cfg["logging"]["file_level"].as_str(), Some("DEBUG"));
    let log = std::fs::read_to_string(first.join("log.txt")).unwrap();
    assert!(log.contains("Updated 1 environment variable(s): TAPS_TEST_VAR"), "{}", log);
}

#[test]
fn switching_a_plugin_on_the_cli_drops_the_files_options_for_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("f.toml"), "[engine.filter]\nname = \"object-size\"\nmin_size = 5\n").unwrap();
    let run = run_ok(d, &args(BAG, &["-c", "f.toml", "--engine.filter", "never", "--engine.transformer", "file"]));
    let cfg = read_config(&run);
    assert_eq!(cfg["engine"]["filter"].as_table().unwrap().len(), 1, "{:?}", cfg["engine"]["filter"]);
    // `none` works as a filter and transformer name (the Python suite raises KeyError).
    let run = run_ok(d, &args(BAG, &["-c", "f.toml", "--engine.filter", "none", "--engine.transformer", "none"]));
    assert!(read_config(&run)["engine"].get("filter").is_none());
}

#[test]
fn run_directories_are_never_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let a = run_ok(d, &args(BAG, &["--run.dir-format", "runs/fixed"]));
    let b = run_ok(d, &args(BAG, &["--run.dir-format", "runs/fixed"]));
    assert_ne!(a, b);
    assert!(b.to_str().unwrap().ends_with("fixed-1"), "{}", b.display());
    assert_eq!(records(&a).len(), 3);
    assert_eq!(records(&b).len(), 3);
    let names: Vec<String> =
        std::fs::read_dir(&a).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["config.toml", "environment.json", "log.txt", "tasks.jsonl"]);
}

#[test]
fn environment_json_describes_the_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_ok(tmp.path(), &args(BAG, &[]));
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("environment.json")).unwrap()).unwrap();
    assert!(env["hardware"]["logical_cores"].as_u64().unwrap() >= 1);
    assert!(env["hardware"]["memory_capacity"].as_f64().unwrap() > 0.0);
    assert!(env["system"]["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(env["software"]["rustc"].as_str().unwrap().starts_with("rustc "));
    assert_eq!(env["software"]["taps"].as_str(), Some(env!("CARGO_PKG_VERSION")));
}

#[test]
fn log_lines_follow_the_reference_format_and_files_can_be_disabled() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_ok(tmp.path(), &args(BAG, &[]));
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    let re = regex::Regex::new(
        r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] (RUN  |APP  |INFO |DEBUG|TRACE|WARNING|ERROR) \([a-z_.]+\) > ",
    )
    .unwrap();
    let starts: Vec<&str> = log.lines().filter(|l| l.starts_with('[')).collect();
    assert!(starts.len() > 8);
    for l in &starts {
        assert!(re.is_match(l), "bad log line: {}", l);
    }
    assert!(log.contains("RUN   (taps.run) > Finished benchmark (app=synthetic"));
    assert!(log.contains("APP   (taps.apps.synthetic) > Starting bag workflow"));
    let run =
        run_ok(tmp.path(), &args(BAG, &["--logging.file-name", "none", "--engine.task-record-file-name", "none"]));
    assert!(!run.join("log.txt").exists());
    assert!(!run.join("tasks.jsonl").exists());
}

#[test]
fn help_lists_plugins_then_the_selections_options() {
    let tmp = tempfile::tempdir().unwrap();
    for a in [&["run", "--help"][..], &["run"][..]] {
        let out = taps(tmp.path(), a);
        assert!(out.status.success());
        let s = String::from_utf8_lossy(&out.stdout);
        for n in ["synthetic", "thread-pool", "object-size", "object-type", "never", "file", "none"] {
            assert!(s.contains(n), "{} missing from help:\n{}", n, s);
        }
    }
    let out = taps(tmp.path(), &["run", "--app", "synthetic", "--engine.executor", "thread-pool", "--help"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(s.contains("--app.task-count non-negative integer"), "{}", s);
    assert!(s.contains("--app.structure bag|diamond|reduce|sequential"), "{}", s);
    assert!(s.contains("[required]") && s.contains("[default: 0.0]"), "{}", s);
    assert!(s.contains("--engine.executor.max-threads"), "{}", s);
    assert!(s.contains("--logging.level") && s.contains("--run.dir-format"), "{}", s);
    assert!(!tmp.path().join("runs").exists());
    let out = taps(tmp.path(), &["list"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("apps:") && s.contains("executors:") && s.contains("filters:") && s.contains("transformers:"));
    let out = taps(tmp.path(), &["completions", "bash"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("_taps"));
}

#[test]
fn bad_input_is_one_line_exit_2_and_nothing_created() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("typo.toml"),
        "[app]\nname = \"synthetic\"\nstructure = \"bag\"\ntask_count = 3\nbag_max_runing = 2\n",
    )
    .unwrap();
    std::fs::write(d.join("type.toml"), "[app]\nname = \"synthetic\"\nstructure = \"bag\"\ntask_count = -3\n").unwrap();
    std::fs::write(d.join("broken.toml"), "[app\nname = 1\n").unwrap();
    std::fs::write(d.join("top.toml"), "[app]\nname = \"synthetic\"\n[engin]\nx = 1\n").unwrap();
    assert_bad_input(d, &args(BAG, &["--app.task-cont", "3"]), &["--app.task-cont", "did you mean --app.task-count"]);
    assert_bad_input(d, &args(BAG, &["--app.task-count", "many"]), &["--app.task-count", "many", "integer"]);
    assert_bad_input(d, &args(BAG, &["--app.task-sleep", "soon"]), &["--app.task-sleep", "soon", "float"]);
    assert_bad_input(d, &args(BAG, &["--app.structure", "tree"]), &["tree", "bag|diamond|reduce|sequential"]);
    assert_bad_input(d, &["run", "-c", "typo.toml"], &["app.bag_max_runing", "did you mean app.bag_max_running"]);
    assert_bad_input(d, &["run", "-c", "type.toml"], &["app.task_count", "-3", "non-negative integer"]);
    assert_bad_input(d, &["run", "-c", "broken.toml"], &["broken.toml", "line 1"]);
    assert_bad_input(d, &["run", "-c", "top.toml"], &["engin", "did you mean engine"]);
    assert_bad_input(d, &["run", "-c", "nope.toml"], &["nope.toml"]);
    assert_bad_input(d, &["run", "--app.task-count", "3"], &["no app is selected", "--app NAME"]);
    assert_bad_input(d, &["run", "--engine.executor", "thread-pool"], &["no app selected", "synthetic"]);
    assert_bad_input(d, &["run", "--app", "synthetc"], &["synthetc", "did you mean \"synthetic\""]);
    assert_bad_input(
        d,
        &args(BAG, &["--engine.executor", "thread-poll"]),
        &["thread-poll", "did you mean \"thread-pool\""],
    );
    assert_bad_input(d, &args(BAG, &["--engine.filter", "big"]), &["big", "object-size", "none"]);
    assert_bad_input(d, &args(BAG, &["--engine.transformer", "redis"]), &["redis", "file", "none"]);
    assert_bad_input(
        d,
        &args(BAG, &["--engine.executor", "thread-pool", "--engine.executor.max-threads", "0"]),
        &["max_threads", "at least 1"],
    );
    assert_bad_input(
        d,
        &args(BAG, &["--engine.filter", "object-type", "--engine.filter.patterns", "[\"(\"]"]),
        &["patterns", "regular expression"],
    );
    assert_bad_input(d, &args(BAG, &["--engine.filter.min-size", "3"]), &["no filter is selected"]);
    assert_bad_input(
        d,
        &args(BAG, &["--run.dir-format", "runs/{user}"]),
        &["{user}", "{name}, {executor}, {timestamp}"],
    );
    assert_bad_input(d, &args(BAG, &["--run.env-vars", "A=1"]), &["--run.env-vars", "JSON object"]);
    assert_bad_input(d, &args(BAG, &["--logging.level", "LOUD"]), &["LOUD", "RUN"]);
    assert_bad_input(d, &args(BAG, &["--engine.task-record-file-name", "../x.jsonl"]), &["task_record_file_name"]);
    assert_bad_input(d, &args(BAG, &["--app.seed"]), &["--app.seed needs a value"]);
    assert_bad_input(d, &args(BAG, &["stray"]), &["stray"]);
    assert_bad_input(
        d,
        &["run", "--app", "synthetic", "--app.structure", "bag", "--app.task-count", "3"],
        &["bag_max_running", "bag"],
    );
    assert!(!d.join("runs").exists());
}

#[test]
fn run_dir_flag_uses_a_prepared_directory_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("prepared")).unwrap();
    let out = taps(d, &args(BAG, &["--run-dir", "prepared"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(records(&d.join("prepared")).len(), 3);
    assert!(!d.join("runs").exists());
    // A second run into the same directory would mix records: refused.
    let out = taps(d, &args(BAG, &["--run-dir", "prepared"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds tasks.jsonl"));
    let out = taps(d, &args(BAG, &["--run-dir", "missing"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
    assert_eq!(records(&d.join("prepared")).len(), 3, "the first run's records are untouched");
}
