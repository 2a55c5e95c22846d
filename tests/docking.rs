//! The docking app through the real `taps` binary with the real programs (Open Babel, AutoDock
//! Vina): vina's score of a known ligand, the five-task chain per molecule on every executor and
//! with the file transformer, the surrogate's choice against chance on published docking scores,
//! failed molecules skipped, and bad input or a missing program refused before a run directory
//! exists.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::TaskRecord;

/// The task names of one molecule's chain, in order.
const CHAIN: [&str; 5] = ["smi_to_pdb", "set_element", "pdb_to_pdbqt", "make_autodock_config", "autodock_vina"];

/// Small molecules that Open Babel embeds and vina docks in seconds.
const SMALL: &[(&str, &str)] = &[
    ("aspirin", "CC(=O)Oc1ccccc1C(=O)O"),
    ("caffeine", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"),
    ("nicotinamide", "NC(=O)c1cccnc1"),
    ("phenol", "Oc1ccccc1"),
    ("salicylic_acid", "OC(=O)c1ccccc1O"),
    ("pyrazinamide", "NC(=O)c1cnccn1"),
    ("theophylline", "Cn1c2nc[nH]c2c(=O)n(C)c1=O"),
    ("benzoic_acid", "OC(=O)c1ccccc1"),
];

/// Settings that keep a docking short: vina's least effort, one pose.
const QUICK: &[&str] = &["--app.exhaustiveness", "1", "--app.num-modes", "1"];

/// `taps run --app docking ARGS` in `cwd`, asserting success; returns the run directory.
fn run_ok(cwd: &Path, args: &[&str]) -> PathBuf {
    common::run_ok(cwd, &[&["run", "--app", "docking"], args].concat())
}

/// Asserts that `taps run --app docking ARGS` is refused as bad input.
fn assert_bad_input(cwd: &Path, args: &[&str], needles: &[&str]) -> String {
    common::assert_bad_input(cwd, &[&["run", "--app", "docking"], args].concat(), needles)
}

/// Writes a ligand CSV of (title, smiles) rows; returns its path.
fn write_ligands(dir: &Path, name: &str, ligands: &[(&str, &str)]) -> PathBuf {
    let path = dir.join(name);
    let rows: String = ligands.iter().map(|(t, s)| format!("{},{}\n", t, s)).collect();
    std::fs::write(&path, format!("TITLE,SMILES\n{}", rows)).unwrap();
    path
}

/// One row of results.csv.
#[derive(Debug, Clone)]
struct Row {
    title: String,
    smiles: String,
    score: f64,
    iteration: u64,
    time: f64,
}

/// results.csv, checking its header.
fn results(run_dir: &Path) -> Vec<Row> {
    common::csv_rows(&run_dir.join("results.csv"), "title,smiles,score,iteration,time")
        .into_iter()
        .map(|f| Row {
            title: f[0].clone(),
            smiles: f[1].clone(),
            score: f[2].parse().unwrap(),
            iteration: f[3].parse().unwrap(),
            time: f[4].parse().unwrap(),
        })
        .collect()
}

/// Checks the records: `molecules` chains of the five tasks, each task's one parent the previous
/// task of its chain; `failed` chains failed. Returns the records.
fn check_chains(run_dir: &Path, molecules: usize, failed: usize) -> Vec<TaskRecord> {
    let recs = common::records(run_dir);
    common::check_record_invariants(&recs);
    let mut per_name: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &recs {
        *per_name.entry(r.name.as_str()).or_default() += 1;
    }
    let want: BTreeMap<&str, usize> = CHAIN.iter().map(|n| (*n, molecules)).collect();
    assert_eq!(per_name, want, "5 tasks per molecule docked");
    let by_id: HashMap<&str, &TaskRecord> = recs.iter().map(|r| (r.task_id.as_str(), r)).collect();
    for r in &recs {
        let step = CHAIN.iter().position(|n| *n == r.name).unwrap();
        if step == 0 {
            assert!(r.parent_task_ids.is_empty(), "{:?}", r);
        } else {
            assert_eq!(r.parent_task_ids.len(), 1, "{:?}", r);
            assert_eq!(by_id[r.parent_task_ids[0].as_str()].name, CHAIN[step - 1], "{:?}", r);
        }
    }
    let failed_vina = recs.iter().filter(|r| r.name == "autodock_vina" && r.success != Some(true)).count();
    assert_eq!(failed_vina, failed, "failed chains");
    recs
}

/// Checks the PNG of best score against time: a PNG file of some size.
fn check_png(run_dir: &Path) {
    let png = std::fs::read(run_dir.join("best-score.png")).expect("best-score.png");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000, "not a PNG");
}

#[test]
fn vina_scores_ibuprofen_where_expected_and_far_above_small_solvents() {
    // Ibuprofen on Debian's test receptor in its box (test-data/conf.txt), exhaustiveness 8
    // (vina's own default), seed 42: -8.32 to -8.44 kcal/mol over seeds 1-3 when measured with
    // vina 1.2.3 on an Open Babel 3.1.1 ligand (apps/docking/README.md). Solvent molecules of
    // 3-4 heavy atoms make few contacts and must score far weaker.
    let dir = tempfile::tempdir().unwrap();
    let csv = write_ligands(
        dir.path(),
        "ligands.csv",
        &[("ibuprofen", "CC(C)Cc1ccc(cc1)C(C)C(=O)O"), ("ethanol", "CCO"), ("acetone", "CC(C)=O"), ("methanol", "CO")],
    );
    let run = run_ok(
        dir.path(),
        &[
            "--app.smi-file-name-ligand",
            csv.to_str().unwrap(),
            "--app.tcl-path",
            "/nonexistent/set_element.tcl",
            "--app.initial-simulations",
            "4",
            "--app.num-iterations",
            "0",
            "--app.exhaustiveness",
            "8",
            "--app.num-modes",
            "3",
            "--app.seed",
            "42",
            "--engine.executor",
            "thread-pool",
            "--engine.executor.max-threads",
            "2",
        ],
    );
    check_chains(&run, 4, 0);
    let rows = results(&run);
    let score: HashMap<&str, f64> = rows.iter().map(|r| (r.title.as_str(), r.score)).collect();
    let ibuprofen = score["ibuprofen"];
    // Open Babel's 3-D embedding is stochastic, so vina's best pose varies between runs: measured
    // −8.44 to −6.14 kcal/mol for ibuprofen here (seed 42, exhaustiveness 8).
    assert!((-9.5..=-5.5).contains(&ibuprofen), "ibuprofen scored {} kcal/mol: {:?}", ibuprofen, rows);
    for solvent in ["ethanol", "acetone", "methanol"] {
        assert!((-4.0..0.0).contains(&score[solvent]), "{} scored {}: {:?}", solvent, score[solvent], rows);
        assert!(score[solvent] - ibuprofen > 1.5, "{} {} vs ibuprofen {}", solvent, score[solvent], ibuprofen);
    }
    assert!(rows.iter().all(|r| r.iteration == 0 && r.time > 0.0));
    // The reference's outputs: training-results.json in pandas' column orientation; the tasks
    // directory is removed (every molecule docked); the ignored VMD script is said so.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("training-results.json")).unwrap()).unwrap();
    assert_eq!(json["score"].as_object().unwrap().len(), 4, "{}", json);
    assert_eq!(json["smiles"]["0"].as_str().unwrap(), rows[0].smiles);
    assert!(!run.join("tasks").exists(), "tasks/ is removed when every molecule docked");
    check_png(&run);
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("app.tcl_path /nonexistent/set_element.tcl is ignored"), "{}", log);
    assert!(log.contains("Submitting 4 initial simulations"), "{}", log);
    assert!(log.contains(&format!("Computation for CC(C)Cc1ccc(cc1)C(C)C(=O)O succeeded with score = {}", ibuprofen)));
}

/// Runs the active-learning loop on `executor ARGS` (4 initial molecules, 1 iteration of 2) and
/// checks what every executor must give; returns the run directory.
fn active_learning_run(cwd: &Path, executor: &[&str]) -> PathBuf {
    let csv = write_ligands(cwd, "small.csv", SMALL);
    let common = [
        "--app.smi-file-name-ligand",
        csv.to_str().unwrap(),
        "--app.initial-simulations",
        "4",
        "--app.num-iterations",
        "1",
        "--app.batch-size",
        "2",
        "--app.keep-files",
        "true",
    ];
    let run = run_ok(cwd, &[&common[..], QUICK, executor].concat());
    check_chains(&run, 6, 0);
    let rows = results(&run);
    assert_eq!(rows.len(), 6, "{:?}", rows);
    let initial: HashSet<&str> = rows.iter().filter(|r| r.iteration == 0).map(|r| r.title.as_str()).collect();
    let chosen: HashSet<&str> = rows.iter().filter(|r| r.iteration == 1).map(|r| r.title.as_str()).collect();
    assert_eq!((initial.len(), chosen.len()), (4, 2), "{:?}", rows);
    assert!(initial.is_disjoint(&chosen), "a molecule was docked twice: {:?}", rows);
    for r in &rows {
        assert!((-12.0..0.0).contains(&r.score), "{:?}", r);
        assert!(SMALL.iter().any(|(t, s)| *t == r.title && *s == r.smiles), "{:?}", r);
    }
    // The iteration's molecules are chosen once the initial ones are in.
    let initial_done = rows.iter().filter(|r| r.iteration == 0).map(|r| r.time).fold(0.0, f64::max);
    assert!(rows.iter().filter(|r| r.iteration == 1).all(|r| r.time >= initial_done), "{:?}", rows);
    // keep_files: each molecule's directory holds what its five tasks wrote.
    let dirs: Vec<PathBuf> = std::fs::read_dir(run.join("tasks")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(dirs.len(), 6, "{:?}", dirs);
    for d in &dirs {
        for f in ["in.pdb", "coords.pdb", "coords.pdbqt", "config.txt", "out.pdbqt", "vina.stdout"] {
            assert!(d.join(f).is_file(), "{} lacks {}", d.display(), f);
        }
        let coords = std::fs::read_to_string(d.join("coords.pdb")).unwrap();
        for atom in coords.lines().filter(|l| l.starts_with("ATOM") || l.starts_with("HETATM")) {
            let element = atom.get(76..78).unwrap_or("").trim();
            assert!(["C", "N", "O", "H"].contains(&element), "element columns of {:?}", atom);
        }
        let config = std::fs::read_to_string(d.join("config.txt")).unwrap();
        assert!(config.contains("center_x = 11\n") && config.contains("size_z = 28\n"), "{}", config);
    }
    check_png(&run);
    run
}

#[test]
fn active_learning_on_a_process_pool_with_the_file_transformer() {
    let dir = tempfile::tempdir().unwrap();
    let run = active_learning_run(
        dir.path(),
        &[&["--engine.executor", "process-pool", "--engine.executor.max-processes", "2"], common::ALL_BY_FILE].concat(),
    );
    let recs = common::records(&run);
    assert!(recs.iter().all(|r| r.bytes_by_reference > 0), "every argument and result went through files");
    assert!(!run.join("data").exists(), "the file transformer's directory is removed");
}

#[cfg(feature = "mpi")]
#[test]
fn active_learning_on_mpi() {
    let dir = tempfile::tempdir().unwrap();
    active_learning_run(dir.path(), &["--engine.executor", "mpi", "--engine.executor.ranks", "3"]);
}

#[test]
fn the_example_config_runs_on_a_thread_pool() {
    // apps/docking/config.toml as is, from the repository root's point of view (the lead's Slurm
    // test and the benchmark use it): the shipped ligands and the default receptor.
    let dir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("apps/docking/config.toml");
    let run = common::run_ok(dir.path(), &["run", "--config", config.to_str().unwrap()]);
    let recs = check_chains(&run, 6, 0);
    assert!(recs.iter().all(|r| r.success == Some(true)));
    assert_eq!(results(&run).len(), 6);
    assert!(run.join("receptor.pdbqt").is_file(), "the gzipped receptor is decompressed into the run");
}

#[test]
fn a_molecule_that_fails_is_skipped_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut ligands = SMALL[..4].to_vec();
    ligands.push(("broken", "C1CC("));
    let csv = write_ligands(dir.path(), "ligands.csv", &ligands);
    let run = run_ok(
        dir.path(),
        &[
            &["--app.smi-file-name-ligand", csv.to_str().unwrap(), "--app.initial-simulations", "5"],
            &["--app.num-iterations", "0", "--engine.executor", "thread-pool"][..],
            QUICK,
        ]
        .concat(),
    );
    let recs = check_chains(&run, 5, 1);
    let failed: Vec<&TaskRecord> = recs.iter().filter(|r| r.success != Some(true)).collect();
    assert_eq!(failed.len(), 5, "the broken molecule's five tasks: {:?}", failed);
    let first = failed.iter().find(|r| r.name == "smi_to_pdb").unwrap();
    let e = first.exception.as_ref().unwrap();
    assert_eq!(e.kind.as_str(), "ProgramFailed", "{:?}", e);
    assert!(e.message.contains("obabel") && e.message.contains("wrote no atoms"), "{}", e.message);
    assert!(e.message.contains("Invalid SMILES"), "its stderr is quoted: {}", e.message);
    for r in failed.iter().filter(|r| r.name != "smi_to_pdb") {
        assert_eq!(r.exception.as_ref().unwrap().kind.as_str(), "ParentFailed", "{:?}", r);
    }
    assert_eq!(results(&run).len(), 4);
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("1 of 5 computations failed"), "{}", log);
    // The failed molecule's directory stays for inspection; those of docked molecules go.
    let left: Vec<String> = std::fs::read_dir(run.join("tasks"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["0004_broken"], "{:?}", left);
}

#[test]
fn vina_failing_on_every_molecule_fails_the_run_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_ligands(dir.path(), "ligands.csv", &SMALL[..4]);
    let receptor = dir.path().join("junk.pdbqt");
    std::fs::write(&receptor, "this is not a receptor\n").unwrap();
    let mut args = vec!["run", "--app", "docking", "--app.smi-file-name-ligand", csv.to_str().unwrap()];
    args.extend(["--app.receptor", receptor.to_str().unwrap(), "--app.initial-simulations", "4"]);
    args.extend(["--app.center-x", "0", "--app.center-y", "0", "--app.center-z", "0"]);
    args.extend(["--app.size-x", "10", "--app.size-y", "10", "--app.size-z", "10"]);
    args.extend(QUICK);
    let out = common::taps(dir.path(), &args);
    assert_eq!(out.status.code(), Some(1), "{}", common::show(&out));
    let run = common::the_run_dir(dir.path());
    // The run says why in its log (stdout and log.txt), as every failed app does.
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    let why = "Caught unhandled exception: only 0 molecules have a score to train on (4 failed so far)";
    assert!(log.contains(why) && String::from_utf8_lossy(&out.stdout).contains(why), "{}", log);

    let recs = check_chains(&run, 4, 4);
    for r in recs.iter().filter(|r| r.name == "autodock_vina") {
        let e = r.exception.as_ref().unwrap();
        assert_eq!(e.kind.as_str(), "ProgramFailed", "{:?}", e);
        assert!(e.message.contains("`vina --config") && e.message.contains("exited with status"), "{}", e.message);
    }
    assert_eq!(results(&run).len(), 0, "results.csv is written, empty");
}

#[test]
fn bad_options_are_refused_before_a_run_directory_exists() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_bad_input(d, &["--app.initial-simulations", "3"], &["Number of initial simulations must be at least four."]);
    assert_bad_input(d, &["--app.receptor", "/etc/hostname"], &["app.receptor /etc/hostname needs its search box"]);
    assert_bad_input(d, &["--app.center-x", "1"], &["app.center_x, app.center_y and app.center_z"]);
    assert_bad_input(
        d,
        &["--app.center-x", "1", "--app.center-y", "1", "--app.center-z", "1"],
        &["set both the box centre"],
    );
    assert_bad_input(
        d,
        &["--app.size-x", "0", "--app.size-y", "1", "--app.size-z", "1", "--app.center-x", "1"]
            .iter()
            .chain(&["--app.center-y", "1", "--app.center-z", "1"])
            .copied()
            .collect::<Vec<_>>(),
        &["app.size_x/y/z must be positive"],
    );
    assert_bad_input(d, &["--app.exhaustiveness", "0"], &["app.exhaustiveness must be at least 1"]);
    assert_bad_input(d, &["--app.energy-range", "-1"], &["app.energy_range must be a positive"]);
    assert_bad_input(d, &["--app.batch-size", "x"], &["--app.batch-size", "expected non-negative integer"]);
    assert_bad_input(
        d,
        &["--app.smi-file-name-ligand", "/nonexistent.csv"],
        &["app.smi_file_name_ligand /nonexistent.csv"],
    );
    let no_smiles = d.join("no-smiles.csv");
    std::fs::write(&no_smiles, "TITLE,SMI\na,C\n").unwrap();
    assert_bad_input(d, &["--app.smi-file-name-ligand", no_smiles.to_str().unwrap()], &["has no SMILES column"]);
    let few = write_ligands(d, "few.csv", &SMALL[..3]);
    assert_bad_input(
        d,
        &["--app.smi-file-name-ligand", few.to_str().unwrap()],
        &["app.initial_simulations (8) is more than the 3 ligands"],
    );
    let with_box = ["--app.center-x", "1", "--app.center-y", "1", "--app.center-z", "1"];
    let with_box = [&with_box[..], &["--app.size-x", "9", "--app.size-y", "9", "--app.size-z", "9"]].concat();
    assert_bad_input(
        d,
        &[&["--app.receptor", "/nonexistent.pdbqt"][..], &with_box].concat(),
        &["app.receptor /nonexistent.pdbqt is not a readable file"],
    );
}

/// A directory of symlinks to the programs in `keep`, to serve as the whole PATH.
fn path_with(dir: &Path, keep: &[&str]) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for p in keep {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap()).map(|d| d.join(p)).find(|f| f.is_file());
        std::os::unix::fs::symlink(found.unwrap_or_else(|| panic!("{} is installed", p)), bin.join(p)).unwrap();
    }
    bin
}

#[test]
fn a_missing_program_is_named_with_its_install_command() {
    for (keep, missing, hint) in
        [(&[][..], "obabel", "apt-get install openbabel"), (&["obabel"][..], "vina", "apt-get install autodock-vina")]
    {
        let dir = tempfile::tempdir().unwrap();
        let bin = path_with(dir.path(), keep);
        let out = Command::new(common::taps_bin())
            .args(["run", "--app", "docking"])
            .current_dir(dir.path())
            .env("PATH", &bin)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", common::show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end(), format!("taps: error: {} not found on PATH: {}", missing, hint));
        assert!(!dir.path().join("runs").exists());
    }
}

/// The published docking scores (receptor 6w63, SARS-CoV-2 3CLpro) of the 694 molecules of the
/// reference's 1k dataset that have one (tests/fixtures/docking/orz_6w63.csv).
fn published() -> (Vec<String>, Vec<f64>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/docking/orz_6w63.csv");
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("TITLE,SMILES,score"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1].to_string(), f[2].parse::<f64>().unwrap())
        })
        .unzip()
}

#[test]
fn the_surrogates_first_batch_beats_a_random_one_on_published_scores() {
    // The app's own selection (initial_sample, choose_batch) on real docking scores. With 32
    // random molecules docked, the 8 the surrogate picks must bind better than a random batch
    // of the rest: by more than 0.3 kcal/mol averaged over seeds 0-9, and on at least 7 of them.
    // Measured: 0.64 kcal/mol better, 8 of 10. (With the reference's 8 initial molecules the
    // model's rank correlation on this set is 0.09 and its first batch is no better than chance:
    // see apps/docking/README.md.)
    use taps::apps::{chem, docking};
    let (smiles, scores) = published();
    let fingerprints = chem::fingerprints(&smiles).expect("obabel runs");
    assert!(fingerprints.iter().filter(|f| f.is_some()).count() > 650, "Open Babel reads the SMILES");
    let mean = |ix: &[usize]| ix.iter().map(|&i| scores[i]).sum::<f64>() / ix.len() as f64;
    let (mut gain, mut wins) = (0.0, 0);
    for seed in 0..10 {
        let initial = docking::initial_sample(smiles.len(), 32, seed);
        let scored: Vec<(usize, f64)> = initial.iter().map(|&i| (i, scores[i])).collect();
        let mut attempted = vec![false; smiles.len()];
        initial.iter().for_each(|&i| attempted[i] = true);
        let chosen = docking::choose_batch(&fingerprints, &scored, &attempted, 8);
        assert_eq!(chosen.len(), 8);
        assert!(chosen.iter().all(|&i| !attempted[i]), "chose a molecule already docked");
        // The expected mean of a random batch is the mean of every molecule not docked yet.
        let unseen: Vec<usize> = (0..smiles.len()).filter(|&i| !attempted[i]).collect();
        gain += (mean(&unseen) - mean(&chosen)) / 10.0;
        wins += usize::from(mean(&chosen) < mean(&unseen));
    }
    assert!(
        gain > 0.3 && wins >= 7,
        "the surrogate's batches beat random ones by {:.2} kcal/mol on {} of 10 seeds",
        gain,
        wins
    );
}
