//! The physics app through the real `taps` binary: from the example config, every ball left on
//! the terrain rests on its surface, the final positions are bitwise the same on thread-pool,
//! process-pool, MPI and through the file transformer, the terrain moves with every task (its
//! bytes are in the records), the pictures are PNGs of the promised size, a run without a
//! seed logs one that repeats it, and bad options are refused before a run directory exists.

use std::path::{Path, PathBuf};

mod common;

use common::{TaskRecord, assert_bad_input, check_record_invariants, records, run_ok_with_stdout};

/// The example config (8 balls, seed 3, 10 simulated seconds on the default 20 m terrain).
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/apps/physics/config.toml");
/// Its number of balls, ball radius (m) and grid spacing (m).
const BALLS: usize = 8;
const RADIUS: f64 = 0.1;
const SPACING: f64 = 0.1;

/// `taps run --config CONFIG ARGS` in `cwd`; the run directory and stdout.
fn run(cwd: &Path, args: &[&str]) -> (PathBuf, String) {
    run_ok_with_stdout(cwd, &[&["run", "--config", CONFIG], args].concat())
}

/// The heightmap in `terrain.csv`: one row per line.
fn read_terrain(run: &Path) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(run.join("terrain.csv")).unwrap();
    text.lines().map(|l| l.split(',').map(|v| v.parse().unwrap()).collect()).collect()
}

/// One row of `positions.csv`: start (x, y, z, vx, vy), end (x, y, z, vx, vy, vz).
struct Row {
    start: [f64; 5],
    end: [f64; 6],
}

fn read_positions(run: &Path) -> (String, Vec<Row>) {
    let text = std::fs::read_to_string(run.join("positions.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("ball,start_x,start_y,start_z,start_vx,start_vy,end_x,end_y,end_z,end_vx,end_vy,end_vz")
    );
    let rows = lines
        .enumerate()
        .map(|(k, l)| {
            let f: Vec<f64> = l.split(',').map(|v| v.parse().unwrap()).collect();
            assert_eq!(f.len(), 12, "{}", l);
            assert_eq!(f[0], k as f64, "balls in order");
            Row { start: f[1..6].try_into().unwrap(), end: f[6..12].try_into().unwrap() }
        })
        .collect();
    (text, rows)
}

/// Height and gradient of the terrain's triangle mesh at (x, y) (cells split along the
/// diagonal from (i, j) to (i + 1, j + 1)), or None off the terrain.
fn surface(h: &[Vec<f64>], x: f64, y: f64) -> Option<(f64, f64, f64)> {
    let d = h.len();
    let (gx, gy) = (x / SPACING, y / SPACING);
    if !(gx >= 0.0 && gy >= 0.0 && gx <= (d - 1) as f64 && gy <= (d - 1) as f64) {
        return None;
    }
    let (j, i) = ((gx as usize).min(d - 2), (gy as usize).min(d - 2));
    let (u, v) = (gx - j as f64, gy - i as f64);
    let (h00, h01, h10, h11) = (h[i][j], h[i][j + 1], h[i + 1][j], h[i + 1][j + 1]);
    Some(if u >= v {
        (h00 + u * (h01 - h00) + v * (h11 - h01), (h01 - h00) / SPACING, (h11 - h01) / SPACING)
    } else {
        (h00 + v * (h10 - h00) + u * (h11 - h10), (h11 - h10) / SPACING, (h10 - h00) / SPACING)
    })
}

/// The science of one run: every ball still over the terrain touches its surface (centre one
/// radius from it, within 1 cm) and is at rest (< 1 cm/s); every other one fell off (below the
/// lowest ground, falling). Returns how many stayed on.
fn check_balls(run: &Path) -> usize {
    let h = read_terrain(run);
    assert_eq!(h.len(), 200, "20 m at 10 points per metre");
    assert!(h.iter().all(|r| r.len() == 200));
    let (min, max) = h.iter().flatten().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert_eq!(min, 0.0, "heights are scaled to [0, terrain_height]");
    assert!((max - 3.0).abs() < 1e-5, "the highest point is terrain_height: {}", max);
    let (_, rows) = read_positions(run);
    assert_eq!(rows.len(), BALLS);
    let mut on = 0;
    for (k, r) in rows.iter().enumerate() {
        // Starts: in the middle 60 % of the terrain, above its top, horizontal speed ≤ 0.1 × width.
        assert!(r.start[..2].iter().all(|v| (4.0..=16.0).contains(v)), "ball {} starts at {:?}", k, r.start);
        assert!(r.start[2] > max, "ball {} starts inside the terrain: {:?}", k, r.start);
        assert!(r.start[3..].iter().all(|v| v.abs() <= 2.0), "ball {} start velocity {:?}", k, r.start);
        let [x, y, z, vx, vy, vz] = r.end;
        let speed = (vx * vx + vy * vy + vz * vz).sqrt();
        match surface(&h, x, y) {
            Some((ground, hx, hy)) => {
                on += 1;
                let distance = (z - ground) / (1.0 + hx * hx + hy * hy).sqrt();
                assert!(
                    (distance - RADIUS).abs() < 0.1 * RADIUS,
                    "ball {} at ({}, {}, {}): centre {} m from the surface (radius {})",
                    k,
                    x,
                    y,
                    z,
                    distance,
                    RADIUS
                );
                assert!(speed < 0.01, "ball {} still moves at {} m/s", k, speed);
            }
            None => assert!(z < min - 1.0 && vz < -1.0, "ball {} off the terrain but not falling: {:?}", k, r.end),
        }
    }
    on
}

/// The records: one `simulate` task per ball, all successful, no dependencies.
fn check_records(run: &Path) -> Vec<TaskRecord> {
    let recs = records(run);
    check_record_invariants(&recs);
    assert_eq!(recs.len(), BALLS, "one task per simulation");
    for r in &recs {
        assert_eq!(r.name, "simulate");
        assert_eq!(r.success, Some(true), "{:?}", r.exception);
        assert!(r.parent_task_ids.is_empty());
    }
    recs
}

/// The terrain's serialised size, from the log line `Generated terrain mesh (…; N bytes serialised)`.
fn terrain_bytes(stdout: &str) -> u64 {
    let line = stdout.lines().find(|l| l.contains("Generated terrain mesh")).expect("terrain line");
    let n = line.rsplit_once("; ").unwrap().1.split(' ').next().unwrap();
    n.parse().unwrap()
}

/// Width and height of a PNG, decoded in full (so a truncated file fails), and whether it has
/// more than one colour.
fn png_size(path: &Path) -> ((u32, u32), bool) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {}", path.display(), e)));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let varied = pixels.chunks(px).any(|p| p != &pixels[..px]);
    ((info.width, info.height), varied)
}

#[test]
fn balls_rest_on_the_terrain_with_the_same_bits_on_every_executor() {
    let tmp = tempfile::tempdir().unwrap();
    let pool: &[&str] = &["--engine.executor", "process-pool", "--engine.executor.max-processes", "2"];
    let runs: Vec<(&str, Vec<&str>)> = vec![
        ("thread-pool", vec![]),
        ("process-pool", pool.to_vec()),
        ("mpi", vec!["--engine.executor", "mpi", "--engine.executor.ranks", "3"]),
        ("process-pool + file transformer", [pool, common::ALL_BY_FILE].concat()),
    ];
    let mut first: Option<(String, String)> = None;
    for (what, args) in &runs {
        let (run, stdout) = run(tmp.path(), args);
        for line in [
            "Generated terrain mesh (200 × 200 points",
            "Generated 8 initial position(s)",
            "Submitting simulations...",
            "Simulations submitted",
            "Received 8 final position(s)",
            "Saved contour map to ",
            "Saved terrain map to ",
        ] {
            assert!(stdout.contains(line), "{}: the log lacks {:?}:\n{}", what, line, stdout);
        }
        assert!(!stdout.contains("No seed given"), "{}", stdout);
        let bytes = terrain_bytes(&stdout);
        assert_eq!(bytes, 160_009, "200² f32 heights, their count, the size and the spacing");
        let recs = check_records(&run);
        // The terrain is an argument of every task: in process it moves by reference, out of
        // process inline, or through the file transformer.
        for r in &recs {
            match *what {
                "thread-pool" => assert_eq!((r.bytes_inline, r.bytes_by_reference), (0, 0), "{:?}", r),
                "process-pool + file transformer" => assert!(r.bytes_by_reference >= bytes, "{}: {:?}", what, r),
                _ => assert!(r.bytes_inline >= bytes, "{}: {:?}", what, r),
            }
        }
        let on = check_balls(&run);
        assert!(on >= BALLS / 2, "{}: only {} of {} balls stayed on the terrain", what, on, BALLS);
        for (name, size) in [("contour.png", (1600, 800)), ("terrain.png", (1600, 800))] {
            let (got, varied) = png_size(&run.join("images").join(name));
            assert_eq!(got, size, "{}: {}", what, name);
            assert!(varied, "{}: {} is blank", what, name);
        }
        let (positions, _) = read_positions(&run);
        let terrain = std::fs::read_to_string(run.join("terrain.csv")).unwrap();
        match &first {
            None => first = Some((positions, terrain)),
            Some((p, t)) => {
                assert_eq!(&terrain, t, "{}: another terrain from the same seed", what);
                assert_eq!(&positions, p, "{}: other final positions from the same seed", what);
            }
        }
    }
}

#[test]
fn a_run_without_a_seed_logs_one_that_repeats_it() {
    let tmp = tempfile::tempdir().unwrap();
    let small = ["--app.simulations", "2", "--app.terrain-width", "6", "--app.total-time", "1"];
    let (run1, stdout) = run(tmp.path(), &[&small[..], &["--app.seed", "none"]].concat());
    let line = stdout.lines().find(|l| l.contains("No seed given (app.seed): using seed ")).expect(&stdout);
    let seed = line.rsplit(' ').next().unwrap();
    seed.parse::<u64>().expect("a seed");
    let (run2, stdout2) = run(tmp.path(), &[&small[..], &["--app.seed", seed]].concat());
    assert!(!stdout2.contains("No seed given"), "{}", stdout2);
    assert_eq!(read_positions(&run1).0, read_positions(&run2).0, "the logged seed repeats the run");
    assert_eq!(std::fs::read(run1.join("terrain.csv")).unwrap(), std::fs::read(run2.join("terrain.csv")).unwrap());
    assert_eq!(read_terrain(&run1).len(), 60);
    // Another seed, another terrain.
    let (run3, _) = run(tmp.path(), &[&small[..], &["--app.seed", "12345"]].concat());
    assert_ne!(std::fs::read(run1.join("terrain.csv")).unwrap(), std::fs::read(run3.join("terrain.csv")).unwrap());
}

#[test]
fn bad_options_exit_2_before_a_run_directory_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let bad = |args: &[&str], needles: &[&str]| {
        assert_bad_input(cwd, &[&["run", "--app", "physics"], args].concat(), needles);
    };
    bad(&[], &["app.simulations", "required"]);
    bad(&["--app.simulations", "0"], &["app.simulations", "at least 1"]);
    bad(&["--app.simulations", "2", "--app.ball-diameter", "-0.2"], &["app.ball_diameter", "> 0"]);
    bad(&["--app.simulations", "2", "--app.ball-mass", "inf"], &["app.ball_mass", "finite"]);
    bad(&["--app.simulations", "2", "--app.tick-rate", "0"], &["app.tick_rate", "at least 1"]);
    bad(&["--app.simulations", "2", "--app.terrain-octaves", "0"], &["app.terrain_octaves", "1 to 32"]);
    bad(&["--app.simulations", "2", "--app.terrain-width", "5000"], &["app.terrain_width", "2 to 16384"]);
    bad(&["--app.simulations", "2", "--app.terrain-scale", "0"], &["app.terrain_scale", "> 0"]);
    bad(&["--app.simulations", "2", "--app.terrain-persistence", "-1"], &["app.terrain_persistence", ">= 0"]);
    bad(&["--app.simulations", "2", "--app.real-time", "sometimes"], &["real-time", "true or false"]);
    assert!(!cwd.join("runs").exists(), "runs/ created for bad input");
}
