//! The montage app through the real `taps` binary and Debian's Montage: the mosaic of a synthetic
//! sky whose images each carry a background offset of their own has no seams left (and the same
//! check finds the seams of a mosaic added without background matching), the task graph has the
//! reference's 2P + D + 4 tasks on every executor and with the file transformer, a user's image
//! folder is never written to, a broken image fails its own projection only, a missing Montage
//! program or a bad option is one line and exit 2 before a run directory exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::TaskRecord;

/// The example config, which the tests run as is (plus the flags each test adds).
fn config() -> String {
    format!("{}/apps/montage/config.toml", env!("CARGO_MANIFEST_DIR"))
}

/// `taps run -c apps/montage/config.toml ARGS` in `cwd`, asserting success; the run directory.
fn run_ok(cwd: &Path, args: &[&str]) -> PathBuf {
    common::run_ok(cwd, &[&["run", "-c", &config()], args].concat())
}

/// Largest seam left in a mosaic whose backgrounds were matched (pixel noise σ = 1; the offsets
/// put in span 100).
const SEAM_LIMIT: f64 = 1.0;

/// A FITS image: size, pixels (row by row, NaN where blank) and reference pixel.
struct Image {
    nx: usize,
    ny: usize,
    data: Vec<f32>,
    crpix: (f64, f64),
}

fn read_image(path: &Path) -> Image {
    let mut f = fitsio::FitsFile::open(path).unwrap_or_else(|e| panic!("{}: {}", path.display(), e));
    let hdu = f.primary_hdu().unwrap();
    let nx = hdu.read_key::<i64>(&mut f, "NAXIS1").unwrap() as usize;
    let ny = hdu.read_key::<i64>(&mut f, "NAXIS2").unwrap() as usize;
    let crpix = (hdu.read_key::<f64>(&mut f, "CRPIX1").unwrap(), hdu.read_key::<f64>(&mut f, "CRPIX2").unwrap());
    let data: Vec<f32> = hdu.read_image(&mut f).unwrap();
    assert_eq!(data.len(), nx * ny, "{}", path.display());
    Image { nx, ny, data, crpix }
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty());
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The seams of `mosaic` along the outline of each image in `images` (projected onto the
/// mosaic's grid, as Montage's intermediate images are): for every pixel inside an image next
/// to a covered pixel outside it, the step between the two; per image, the median step (stars
/// and noise average out); the largest of these in absolute value. Where one image's background
/// is off from its neighbours' by Δ, its outline steps by about Δ / (images covering there).
fn largest_seam(mosaic: &Path, images: &[PathBuf]) -> f64 {
    let m = read_image(mosaic);
    let covered = |x: i64, y: i64| {
        x >= 0
            && y >= 0
            && (x as usize) < m.nx
            && (y as usize) < m.ny
            && m.data[y as usize * m.nx + x as usize].is_finite()
    };
    let mut worst: f64 = 0.0;
    for path in images {
        let img = read_image(path);
        // Montage's intermediate images are cut-outs of the mosaic's grid: whole-pixel offsets.
        let (dx, dy) = (m.crpix.0 - img.crpix.0, m.crpix.1 - img.crpix.1);
        assert!(dx.fract() == 0.0 && dy.fract() == 0.0, "{} is not on the mosaic's grid", path.display());
        let (dx, dy) = (dx as i64, dy as i64);
        let inside = |x: i64, y: i64| {
            let (ix, iy) = (x - dx, y - dy);
            ix >= 0
                && iy >= 0
                && (ix as usize) < img.nx
                && (iy as usize) < img.ny
                && img.data[iy as usize * img.nx + ix as usize].is_finite()
        };
        let mut steps = Vec::new();
        for iy in 0..img.ny as i64 {
            for ix in 0..img.nx as i64 {
                let (x, y) = (ix + dx, iy + dy);
                if !inside(x, y) || !covered(x, y) {
                    continue;
                }
                for (nx, ny) in [(x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)] {
                    if !inside(nx, ny) && covered(nx, ny) {
                        let v = |x: i64, y: i64| m.data[y as usize * m.nx + x as usize] as f64;
                        steps.push(v(x, y) - v(nx, ny));
                    }
                }
            }
        }
        if steps.len() >= 20 {
            worst = worst.max(median(steps).abs());
        }
    }
    worst
}

/// The images `mbackground` wrote (corrected, on the mosaic's grid), area files left out.
fn corrected_images(run: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run.join("data/corrections"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with("_area.fits"))
        .collect();
    v.sort();
    v
}

/// Rows of an IPAC table (lines that are neither keywords nor `|` headers).
fn table_rows(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().filter(|l| !l.starts_with('|') && !l.starts_with('\\') && !l.trim().is_empty()).count()
}

/// Records by task name.
fn by_name(recs: &[TaskRecord]) -> BTreeMap<String, Vec<&TaskRecord>> {
    let mut m: BTreeMap<String, Vec<&TaskRecord>> = BTreeMap::new();
    for r in recs {
        m.entry(r.name.clone()).or_default().push(r);
    }
    m
}

/// The reference's task graph: P mproject, one mimgtbl, one moverlaps, D mdiff (rows of
/// diffs.tbl), one bgexec_prep, B mbackground (rows of images.tbl), one madd — 2P + D + 4 when
/// every projection succeeds; moverlaps, bgexec_prep and madd depend on mimgtbl and nothing else
/// has a parent. Returns the records.
fn check_graph(run: &Path, projections: usize) -> Vec<TaskRecord> {
    let recs = common::records(run);
    common::check_record_invariants(&recs);
    let d = table_rows(&run.join("data/diffs.tbl"));
    let b = table_rows(&run.join("data/images.tbl"));
    let names = by_name(&recs);
    let count = |n: &str| names.get(n).map_or(0, Vec::len);
    let counts: Vec<(&str, usize)> =
        ["mproject", "mimgtbl", "moverlaps", "mdiff", "bgexec_prep", "mbackground", "madd"]
            .iter()
            .map(|n| (*n, count(n)))
            .collect();
    assert_eq!(
        counts,
        [
            ("mproject", projections),
            ("mimgtbl", 1),
            ("moverlaps", 1),
            ("mdiff", d),
            ("bgexec_prep", 1),
            ("mbackground", b),
            ("madd", 1)
        ]
    );
    assert_eq!(recs.len(), projections + d + b + 4);
    let mimgtbl = &names["mimgtbl"][0].task_id;
    for r in &recs {
        let want: Vec<String> = match r.name.as_str() {
            "moverlaps" | "bgexec_prep" | "madd" => vec![mimgtbl.clone()],
            _ => vec![],
        };
        assert_eq!(r.parent_task_ids, want, "parents of {}", r.name);
    }
    recs
}

/// A run of the example config that must succeed with every task: the graph, the seams, the outputs.
fn check_run(run: &Path) {
    let recs = check_graph(run, 4);
    assert!(
        recs.iter().all(|r| r.success == Some(true)),
        "a task failed: {:?}",
        recs.iter().find(|r| r.success != Some(true))
    );
    assert_eq!(recs.len(), 2 * 4 + 6 + 4, "2x2 images overlap pairwise: D = 6");
    let seam = largest_seam(&run.join("data/m17.fits"), &corrected_images(run));
    assert!(seam < SEAM_LIMIT, "a seam of {} is left in the mosaic (limit {})", seam, SEAM_LIMIT);
    let png = std::fs::read(run.join("data/m17.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "m17.png is not a PNG");
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    for line in [
        "Configured output directory (",
        "Starting projections",
        "Projections completed",
        "Starting difference computations",
        "Differences completed",
        "Starting background computations",
        "Backgrounds completed",
        "Created output FITS file at ",
    ] {
        assert!(log.contains(&format!("APP   (taps.apps.montage) > {}", line)), "log lacks {:?}:\n{}", line, log);
    }
}

#[test]
fn the_mosaic_has_no_seams_and_the_check_finds_them_without_background_matching() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_ok(tmp.path(), &["--engine.executor", "thread-pool"]);
    check_run(&run);
    let matched = largest_seam(&run.join("data/m17.fits"), &corrected_images(&run));

    // The same images added without mBackground: the offsets (spread over ±50) show as seams.
    let data = run.join("data");
    let raw = tmp.path().join("unmatched.fits");
    let out = Command::new("mAdd")
        .arg("-p")
        .arg(data.join("projections"))
        .arg(data.join("images.tbl"))
        .arg(data.join("Kimages.hdr"))
        .arg(&raw)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::show(&out));
    let unmatched = largest_seam(&raw, &corrected_images(&run));
    eprintln!("largest seam: {:.3} with background matching, {:.3} without", matched, unmatched);
    assert!(
        unmatched > 10.0 * SEAM_LIMIT && unmatched > 20.0 * matched,
        "without background matching the seams are {}, with it {}",
        unmatched,
        matched
    );
}

#[test]
fn pairs_whose_outlines_only_touch_are_no_failures() {
    let tmp = tempfile::tempdir().unwrap();
    // A 3x3 grid of half-overlapping images: mOverlaps also lists pairs two columns or rows apart,
    // whose outlines touch but which share no pixel.
    let run = run_ok(tmp.path(), &["--engine.executor", "thread-pool", "--app.grid", "3", "--app.image-size", "48"]);
    let recs = check_graph(&run, 9);
    assert!(recs.iter().all(|r| r.success == Some(true)), "{:?}", recs.iter().find(|r| r.success != Some(true)));
    let d = table_rows(&run.join("data/diffs.tbl"));
    let written = std::fs::read_dir(run.join("data/diffs"))
        .unwrap()
        .filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().ends_with("_area.fits"))
        .count();
    assert!(written < d, "every one of the {} listed pairs had pixels in common", d);
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    let line = format!("{} of {} overlapping pairs share no pixel", d - written, d);
    assert!(log.contains(&line), "log lacks {:?}:\n{}", line, log);
    let seam = largest_seam(&run.join("data/m17.fits"), &corrected_images(&run));
    assert!(seam < SEAM_LIMIT, "a seam of {} is left in the mosaic", seam);
}

#[test]
fn process_pool_makes_the_same_graph_and_a_seamless_mosaic() {
    let tmp = tempfile::tempdir().unwrap();
    check_run(&run_ok(tmp.path(), &["--engine.executor", "process-pool"]));
}

#[test]
fn mpi_makes_the_same_graph_and_a_seamless_mosaic() {
    let tmp = tempfile::tempdir().unwrap();
    // taps launches mpirun itself (its launch profile allows root).
    let run = run_ok(tmp.path(), &["--engine.executor", "mpi", "--engine.executor.ranks", "3"]);
    check_run(&run);
    let recs = common::records(&run);
    assert!(recs.iter().all(|r| r.worker.as_deref().is_some_and(|w| w.starts_with("rank-"))), "not run on MPI ranks");
}

#[test]
fn the_file_transformer_moves_every_path_and_leaves_its_directory_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let file_dir = tmp.path().join("file-dir");
    std::fs::create_dir(&file_dir).unwrap();
    let fd = file_dir.to_str().unwrap();
    let run = run_ok(tmp.path(), &[common::ALL_BY_FILE, &["--engine.transformer.file-dir", fd]].concat());
    check_run(&run);
    let recs = common::records(&run);
    assert!(recs.iter().all(|r| r.bytes_by_reference > 0), "a task's paths did not go through the transformer");
    assert_eq!(std::fs::read_dir(&file_dir).unwrap().count(), 0, "the transformer left files in {}", fd);
    // Its default directory, RUN/data, is the app's output directory: refused before the run.
    let other = tempfile::tempdir().unwrap();
    common::assert_bad_input(
        other.path(),
        &[&["run", "-c", &config()], common::ALL_BY_FILE].concat(),
        &["app.output_dir = \"data\" clashes", "file transformer"],
    );
}

/// Every file under `dir` with its bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let m = std::fs::metadata(&p).unwrap();
            (p.clone(), (std::fs::read(&p).unwrap(), m.modified().unwrap()))
        })
        .collect()
}

#[test]
fn a_users_folder_is_never_written_and_a_broken_image_fails_only_its_projection() {
    let tmp = tempfile::tempdir().unwrap();
    let first = run_ok(tmp.path(), &["--engine.executor", "thread-pool", "--app.preview", "false"]);
    assert!(!first.join("data/m17.png").exists(), "preview false wrote a preview");
    // The user's folder: the sky of that run, and one file that is not FITS at all.
    let user = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(first.join("sky")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, user.path().join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(user.path().join("broken.fits"), "SIMPLE  = not a FITS file\n").unwrap();
    std::fs::write(user.path().join("notes.txt"), "not an image\n").unwrap();
    let before = snapshot(user.path());
    let cwd = tempfile::tempdir().unwrap();
    let folder = user.path().to_str().unwrap();
    let run = run_ok(cwd.path(), &["--engine.executor", "process-pool", "--app.img-folder", folder]);
    assert_eq!(snapshot(user.path()), before, "the user's folder changed");
    assert!(!run.join("sky").exists(), "a synthetic sky was written although img_folder was given");

    // 5 projections submitted (4 images + the broken one); B = 4 rows in images.tbl.
    let recs = check_graph(&run, 5);
    let failed: Vec<&TaskRecord> = recs.iter().filter(|r| r.success != Some(true)).collect();
    assert_eq!(failed.len(), 1, "{:?}", failed);
    let (r, e) = (failed[0], failed[0].exception.as_ref().unwrap());
    assert_eq!((r.name.as_str(), e.kind.as_str()), ("mproject", "ProgramFailed"), "{:?}", e);
    for needle in ["`mProject ", "broken.fits", "exited with status 1", "stat=ERROR, msg="] {
        assert!(e.message.contains(needle), "{:?} lacks {:?}", e.message, needle);
    }
    let seam = largest_seam(&run.join("data/m17.fits"), &corrected_images(&run));
    assert!(seam < SEAM_LIMIT, "a seam of {} is left in the mosaic", seam);
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("1 of 5 projections failed; the mosaic goes on without them"), "{}", log);
}

#[test]
fn a_folder_of_broken_images_fails_with_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let user = tmp.path().join("images");
    std::fs::create_dir(&user).unwrap();
    std::fs::write(user.join("a.fits"), "not FITS\n").unwrap();
    let out = common::taps(tmp.path(), &["run", "-c", &config(), "--app.img-folder", user.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", common::show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let errors: Vec<&str> = stdout.lines().filter(|l| l.contains("ERROR (taps.run) > ")).collect();
    assert_eq!(errors.len(), 1, "{}", common::show(&out));
    let want = format!("no usable FITS image in {} (mImgtbl: stat=OK, module=mImgtbl, count=0", user.display());
    assert!(errors[0].contains(&want) && errors[0].contains("badfits=1"), "{}", errors[0]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", common::show(&out));
    // No task ran: the run stopped in the client, before the projections.
    assert!(common::records(&common::the_run_dir(tmp.path())).is_empty());
}

#[test]
fn bad_options_are_one_line_and_exit_2_before_a_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let bad = |args: &[&str], needles: &[&str]| {
        common::assert_bad_input(d, &[&["run", "-c", &config()], args].concat(), needles);
    };
    bad(&["--app.grid", "1"], &["app.grid must be from 2 to 16", "got 1"]);
    bad(&["--app.overlap", "0.95"], &["app.overlap must be from 0.1 to 0.9"]);
    bad(&["--app.noise", "-1"], &["app.noise must be a finite number ≥ 0"]);
    bad(&["--app.output-dir", "../out"], &["app.output_dir must be a relative path inside the run directory"]);
    bad(&["--app.output-dir", "/tmp/out"], &["app.output_dir must be a relative path"]);
    bad(&["--app.img-tbl", "a/b.tbl"], &["app.img_tbl must be a plain file name"]);
    bad(&["--app.img-hdr", "images.tbl"], &["app.img_hdr = \"images.tbl\" is a file the app writes itself"]);
    bad(&["--app.output-dir", "tasks.jsonl"], &["\"tasks.jsonl\" clashes", "app.output_dir"]);
    bad(&["--app.output-dir", "sky"], &["app.output_dir = \"sky\" clashes", "synthetic sky"]);
    bad(&["--app.img-folder", "no/such/dir"], &["app.img_folder ", "no/such/dir: No such file"]);
    std::fs::create_dir(d.join("empty")).unwrap();
    std::fs::write(d.join("empty/a.fit"), "").unwrap();
    bad(&["--app.img-folder", "empty"], &["app.img_folder ", "empty holds no *.fits files"]);
    bad(&["--app.grid", "two"], &["app.grid", "non-negative integer"]);
}

#[test]
fn a_missing_montage_program_is_named_with_its_install_command() {
    let tmp = tempfile::tempdir().unwrap();
    // A PATH with every Montage program the app runs but mDiff.
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for p in ["mImgtbl", "mMakeHdr", "mProject", "mOverlaps", "mFitExec", "mBgModel", "mBackground", "mAdd", "mViewer"]
    {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .map(|d| d.join(p))
            .find(|f| f.is_file())
            .unwrap_or_else(|| panic!("{} is not installed", p));
        std::os::unix::fs::symlink(found, bin.join(p)).unwrap();
    }
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let out = Command::new(common::taps_bin())
        .args(["run", "-c", &config(), "--engine.executor", "thread-pool"])
        .env("PATH", &bin)
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", common::show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end(), "taps: error: mDiff not found on PATH: apt-get install montage", "{}", stderr);
    assert!(!cwd.join("runs").exists(), "a run directory was created");
}
