//! The report's charts, drawn once for PNG (files) and SVG (files and the HTML page): a Gantt
//! chart of each run's tasks per worker, a histogram of each run's overhead parts, and for
//! several runs a bar chart of makespan by executor with min–max error bars.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Parts, Report, Run, Suite, run_parts};
use crate::bench::quantiles;
use crate::plot::{FAMILY, fonts};

type Draw<'a, DB> = &'a DrawingArea<DB, Shift>;

/// One lane of a Gantt chart: its label and the `(start, end, name index)` of its tasks.
pub struct Lane {
    /// Worker (`thread-1`, `rank-2`) or, for Python runs, `host #k`.
    pub label: String,
    /// Execution intervals in seconds since the run's first submit, with the task name's index.
    pub bars: Vec<(f64, f64, usize)>,
}

/// Sorts worker names by their text, then by their number (`thread-2` before `thread-10`).
fn worker_key(w: &str) -> (String, u64) {
    let (head, num) = w.rsplit_once('-').unwrap_or((w, ""));
    (head.to_string(), num.parse().unwrap_or(0))
}

/// The lanes of a run's Gantt chart and its task names: one per worker when the records name
/// it (taps), else packed per host: each task, in order of start, goes to the first lane of its
/// host free at its start (the Python suite's records have no worker).
pub fn lanes(run: &Run) -> (Vec<Lane>, Vec<String>) {
    let t0 = run.records.iter().map(|r| r.submit_time).fold(f64::INFINITY, f64::min);
    let offsets = clock_offsets(run);
    let mut names: Vec<String> = Vec::new();
    let mut ran: Vec<(f64, f64, usize, String, Option<String>)> = Vec::new();
    for r in &run.records {
        let Some(e) = &r.execution else { continue };
        let n = names.iter().position(|n| *n == r.name).unwrap_or_else(|| {
            names.push(r.name.clone());
            names.len() - 1
        });
        let shift = offsets.get(&e.hostname).copied().unwrap_or(0.0) - t0;
        ran.push((
            e.execution_start_time + shift,
            e.execution_end_time + shift,
            n,
            e.hostname.clone(),
            r.worker.clone(),
        ));
    }
    ran.sort_by(|a, b| a.0.total_cmp(&b.0));
    if run.suite == Suite::Taps {
        let mut by: BTreeMap<(String, u64), Lane> = BTreeMap::new();
        for (s, e, n, host, w) in ran {
            let label = w.unwrap_or(host);
            by.entry(worker_key(&label)).or_insert_with(|| Lane { label, bars: Vec::new() }).bars.push((s, e, n));
        }
        return (by.into_values().collect(), names);
    }
    let mut by_host: BTreeMap<String, Vec<Lane>> = BTreeMap::new();
    for (s, e, n, host, _) in ran {
        let lanes = by_host.entry(host.clone()).or_default();
        match lanes.iter_mut().find(|l| l.bars.last().is_none_or(|b| b.1 <= s)) {
            Some(l) => l.bars.push((s, e, n)),
            None => lanes.push(Lane { label: format!("{} #{}", host, lanes.len() + 1), bars: vec![(s, e, n)] }),
        }
    }
    (by_host.into_values().flatten().collect(), names)
}

/// Per host other than the driver's, the estimated offset of the driver's clock from the host's:
/// the median over its tasks of the driver's midpoint (ready + received) / 2 minus the host's
/// midpoint (execution start + end) / 2, as NTP estimates it (transit taken as symmetric).
pub fn clock_offsets(run: &Run) -> HashMap<String, f64> {
    let Some(driver) = &run.driver_host else { return HashMap::new() };
    let mut diffs: HashMap<String, Vec<f64>> = HashMap::new();
    for (r, p) in run_parts(run) {
        let (Some(e), Some(received)) = (&r.execution, r.received_time) else { continue };
        if e.hostname != *driver {
            let ready = r.submit_time + p.wait;
            diffs
                .entry(e.hostname.clone())
                .or_default()
                .push((ready + received) / 2.0 - (e.execution_start_time + e.execution_end_time) / 2.0);
        }
    }
    diffs.into_iter().map(|(h, mut v)| (h, quantiles(&mut v).median)).collect()
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Draws a chart's series labels in its upper right corner.
fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 13))
        .draw()
        .map_err(err)?;
    Ok(())
}

fn colour(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    C[i % C.len()]
}

/// Size of a run's Gantt chart.
fn gantt_size(lanes: usize) -> (u32, u32) {
    (900, 160 + 26 * lanes.clamp(1, 30) as u32)
}

fn gantt<DB: DrawingBackend>(root: Draw<DB>, run: &Run) -> Result<(), String> {
    let text = fonts();
    let (lanes, names) = lanes(run);
    root.fill(&WHITE).map_err(err)?;
    let end = lanes.iter().flat_map(|l| l.bars.iter().map(|b| b.1)).fold(0.0, f64::max).max(1e-6);
    let n = lanes.len().max(1);
    let mut b = ChartBuilder::on(root);
    b.margin(15);
    if text {
        b.caption(format!("Tasks per worker: {}", run.dir), (FAMILY, 18)).x_label_area_size(40).y_label_area_size(110);
    }
    let mut chart = b.build_cartesian_2d(0.0..end * 1.02, -0.5..n as f64 - 0.5).map_err(err)?;
    let labels: Vec<String> = lanes.iter().map(|l| l.label.clone()).collect();
    let mut mesh = chart.configure_mesh();
    mesh.disable_y_mesh().y_labels(n);
    let fmt = move |y: &f64| {
        let i = y.round();
        if (y - i).abs() < 1e-6 && i >= 0.0 {
            labels.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    if text {
        mesh.x_desc("seconds since the first submit").label_style((FAMILY, 13)).y_label_formatter(&fmt);
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(err)?;
    for (name_idx, name) in names.iter().enumerate() {
        let bars = lanes.iter().enumerate().flat_map(|(i, l)| {
            l.bars.iter().filter(move |b| b.2 == name_idx).map(move |b| {
                Rectangle::new(
                    [(b.0, i as f64 - 0.35), (b.1.max(b.0 + end * 1e-3), i as f64 + 0.35)],
                    colour(name_idx).filled(),
                )
            })
        });
        let s = chart.draw_series(bars).map_err(err)?;
        if text {
            let c = colour(name_idx);
            s.label(name.clone()).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
        }
    }
    if text {
        legend(&mut chart)?;
    }
    root.present().map_err(err)
}

/// Reads one part of a task's time.
type PartOf = fn(&Parts) -> Option<f64>;

/// The overhead parts drawn as histograms, with a getter for each.
const PARTS: [(&str, PartOf); 4] = [
    ("waiting for parents", |p| Some(p.wait)),
    ("queueing", |p| p.queue),
    ("input transfer + transform", |p| Some(p.input)),
    ("result transform + transfer", |p| p.result),
];

/// Counts of `v` in `bins` equal bins from its minimum to its 99th percentile (larger values in
/// the last bin); the bins' lower edges, their width and the counts.
pub fn histogram(v: &[f64], bins: usize) -> (f64, f64, Vec<u64>) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return (0.0, 1.0, vec![0; bins]);
    }
    let lo = s[0];
    let hi = s[((s.len() as f64 * 0.99).ceil() as usize).clamp(1, s.len()) - 1];
    let width = if hi > lo { (hi - lo) / bins as f64 } else { 1.0 };
    let mut counts = vec![0u64; bins];
    for x in s {
        counts[(((x - lo) / width) as usize).min(bins - 1)] += 1;
    }
    (lo, width, counts)
}

fn overhead_hist<DB: DrawingBackend>(root: Draw<DB>, run: &Run) -> Result<(), String> {
    let text = fonts();
    let parts: Vec<Parts> = run_parts(run).into_iter().map(|(_, p)| p).collect();
    root.fill(&WHITE).map_err(err)?;
    let body = if text {
        root.titled(&format!("Overhead parts: {}", run.dir), (FAMILY, 18)).map_err(err)?
    } else {
        root.clone()
    };
    for (i, (area, (title, get))) in body.split_evenly((2, 2)).iter().zip(PARTS).enumerate() {
        let v: Vec<f64> = parts.iter().filter_map(get).map(|s| s * 1e6).collect();
        let (lo, w, counts) = histogram(&v, 30);
        let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
        let mut b = ChartBuilder::on(area);
        b.margin(10);
        if text {
            let t = if v.is_empty() { format!("{} (n/a: other host)", title) } else { title.to_string() };
            b.caption(t, (FAMILY, 15)).x_label_area_size(35).y_label_area_size(50);
        }
        let mut chart = b.build_cartesian_2d(lo..lo + w * counts.len() as f64, 0.0..top * 1.1).map_err(err)?;
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh().x_labels(6).y_labels(5);
        let digits = if w * counts.len() as f64 >= 10.0 { 0 } else { 2 };
        let x_fmt = move |x: &f64| format!("{:.*}", digits, x);
        let y_fmt = |y: &f64| format!("{:.0}", y);
        if text {
            mesh.x_desc("µs")
                .y_desc("tasks")
                .label_style((FAMILY, 12))
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&y_fmt);
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw().map_err(err)?;
        chart
            .draw_series(counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(k, c)| {
                let x = lo + w * k as f64;
                Rectangle::new([(x, 0.0), (x + w, *c as f64)], colour(i).mix(0.8).filled())
            }))
            .map_err(err)?;
    }
    root.present().map_err(err)
}

fn makespan_bars<DB: DrawingBackend>(root: Draw<DB>, r: &Report) -> Result<(), String> {
    let text = fonts();
    root.fill(&WHITE).map_err(err)?;
    // Clusters: app (and the options telling its configurations apart); bars: the groups in it.
    let mut clusters: Vec<(String, Vec<usize>)> = Vec::new();
    for (gi, g) in r.groups.iter().enumerate() {
        let label = if g.differs.is_empty() { g.app.clone() } else { format!("{} {}", g.app, g.differs) };
        match clusters.iter_mut().find(|c| c.0 == label) {
            Some(c) => c.1.push(gi),
            None => clusters.push((label, vec![gi])),
        }
    }
    let mut executors: Vec<&str> = Vec::new();
    for g in &r.groups {
        if !executors.contains(&g.executor.as_str()) {
            executors.push(&g.executor);
        }
    }
    let top = r.groups.iter().map(|g| g.makespan_s.max).fold(0.0, f64::max).max(1e-6) * 1.25;
    let mut b = ChartBuilder::on(root);
    b.margin(15);
    if text {
        b.caption("Makespan by executor (bars: median; whiskers: min–max)", (FAMILY, 18)).y_label_area_size(60);
    }
    let mut chart = b.build_cartesian_2d(0.0..clusters.len() as f64, 0.0..top).map_err(err)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh().disable_x_axis();
    if text {
        mesh.y_desc("makespan (s)").label_style((FAMILY, 13));
    } else {
        mesh.disable_y_axis();
    }
    mesh.draw().map_err(err)?;
    let mut bars: Vec<(usize, f64, f64, &super::Group)> = Vec::new();
    for (ci, (_, members)) in clusters.iter().enumerate() {
        let w = 0.8 / members.len() as f64;
        for (j, &gi) in members.iter().enumerate() {
            let g = &r.groups[gi];
            let x0 = ci as f64 + 0.1 + w * j as f64;
            bars.push((executors.iter().position(|e| *e == g.executor).unwrap_or(0), x0, x0 + w * 0.9, g));
        }
    }
    for (ei, name) in executors.iter().enumerate() {
        let c = colour(ei);
        let s = chart
            .draw_series(
                bars.iter()
                    .filter(|b| b.0 == ei)
                    .map(|b| Rectangle::new([(b.1, 0.0), (b.2, b.3.makespan_s.median)], c.filled())),
            )
            .map_err(err)?;
        if text {
            s.label(name.to_string()).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
        }
    }
    for b in bars.iter().filter(|b| b.3.runs.len() > 1) {
        let (x, s) = ((b.1 + b.2) / 2.0, b.3.makespan_s);
        let q = (b.2 - b.1) / 4.0;
        let lines =
            [vec![(x, s.min), (x, s.max)], vec![(x - q, s.min), (x + q, s.min)], vec![(x - q, s.max), (x + q, s.max)]];
        chart.draw_series(lines.into_iter().map(|l| PathElement::new(l, BLACK.stroke_width(2)))).map_err(err)?;
    }
    if text {
        let labels = clusters
            .iter()
            .enumerate()
            .map(|(ci, (label, _))| Text::new(label.clone(), (ci as f64 + 0.1, top * 0.97), (FAMILY, 14).into_font()));
        chart.draw_series(labels).map_err(err)?;
        legend(&mut chart)?;
    }
    root.present().map_err(err)
}

/// One chart of the report: a file stem, a title, its size and how to draw it.
struct Chart<'a> {
    stem: String,
    title: String,
    size: (u32, u32),
    what: What<'a>,
}

enum What<'a> {
    Gantt(&'a Run),
    Hist(&'a Run),
    Makespan(&'a Report),
}

fn charts<'a>(runs: &'a [Run], r: &'a Report) -> Vec<Chart<'a>> {
    let mut out = Vec::new();
    let mut stems: Vec<String> = Vec::new();
    for run in runs {
        let base = Path::new(&run.dir).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or("run".into());
        let mut stem = base.clone();
        let mut k = 1;
        while stems.contains(&stem) {
            k += 1;
            stem = format!("{}-{}", base, k);
        }
        stems.push(stem.clone());
        let n = lanes(run).0.len();
        out.push(Chart {
            stem: format!("{}-gantt", stem),
            title: format!("{}: tasks per worker", run.dir),
            size: gantt_size(n),
            what: What::Gantt(run),
        });
        out.push(Chart {
            stem: format!("{}-overhead", stem),
            title: format!("{}: overhead parts", run.dir),
            size: (900, 600),
            what: What::Hist(run),
        });
    }
    if runs.len() > 1 {
        out.push(Chart {
            stem: "makespan".into(),
            title: "Makespan by executor".into(),
            size: (900, 500),
            what: What::Makespan(r),
        });
    }
    out
}

fn draw<DB: DrawingBackend>(root: Draw<DB>, what: &What) -> Result<(), String> {
    match what {
        What::Gantt(run) => gantt(root, run),
        What::Hist(run) => overhead_hist(root, run),
        What::Makespan(r) => makespan_bars(root, r),
    }
}

/// Writes every chart as `STEM.png` and `STEM.svg` into `dir`: `RUN-gantt`, `RUN-overhead` per
/// run (RUN = the run dir's name) and `makespan` for several runs.
pub fn write_files(dir: &Path, runs: &[Run], r: &Report) -> Result<(), String> {
    for c in charts(runs, r) {
        let png = dir.join(format!("{}.png", c.stem));
        let svg = dir.join(format!("{}.svg", c.stem));
        let e = |p: &Path, e: String| format!("cannot draw {}: {}", p.display(), e);
        draw(&BitMapBackend::new(&png, c.size).into_drawing_area(), &c.what).map_err(|x| e(&png, x))?;
        draw(&SVGBackend::new(&svg, c.size).into_drawing_area(), &c.what).map_err(|x| e(&svg, x))?;
    }
    Ok(())
}

/// Every chart as an SVG document, with its title.
pub fn svgs(runs: &[Run], r: &Report) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for c in charts(runs, r) {
        let mut s = String::new();
        draw(&SVGBackend::with_string(&mut s, c.size).into_drawing_area(), &c.what)?;
        out.push((c.title, s));
    }
    Ok(out)
}
