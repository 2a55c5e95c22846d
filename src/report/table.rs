//! The report's tables as text, Markdown, CSV and a self-contained HTML page.

use super::{Group, PartStats, Report, Run, RunSummary, Spread, charts};
use crate::bench::Quantiles;

/// A titled table of text cells.
struct Table {
    title: &'static str,
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

const NA: &str = "n/a";

fn us(q: Option<Quantiles>, f: fn(Quantiles) -> f64) -> String {
    q.map_or(NA.into(), |q| format!("{:.1}", f(q) * 1e6))
}

fn med(q: Option<Quantiles>) -> String {
    us(q, |q| q.median)
}

fn med_p95(q: Option<Quantiles>) -> String {
    q.map_or(NA.into(), |q| format!("{:.1} / {:.1}", q.median * 1e6, q.p95 * 1e6))
}

fn bytes(b: Option<u64>) -> String {
    b.map_or(NA.into(), |b| b.to_string())
}

fn spread(s: Spread, digits: usize, scale: f64, repeated: bool) -> String {
    if repeated {
        format!("{:.d$} [{:.d$}–{:.d$}]", s.median * scale, s.min * scale, s.max * scale, d = digits)
    } else {
        format!("{:.d$}", s.median * scale, d = digits)
    }
}

fn tables(r: &Report) -> Vec<Table> {
    let runs = Table {
        title: "Runs",
        headers: vec![
            "run_dir",
            "app",
            "executor",
            "data",
            "status",
            "tasks",
            "failed",
            "makespan_s",
            "tasks_per_s",
            "overhead_median_us",
            "overhead_p95_us",
            "bytes_inline",
            "bytes_by_reference",
        ],
        rows: r
            .runs
            .iter()
            .map(|s| {
                vec![
                    s.run_dir.clone(),
                    s.app.clone(),
                    s.executor.clone(),
                    s.data.clone(),
                    s.status.clone(),
                    s.tasks.to_string(),
                    s.failed.to_string(),
                    format!("{:.3}", s.makespan_s),
                    format!("{:.1}", s.throughput_per_s),
                    med(s.parts.overhead),
                    us(s.parts.overhead, |q| q.p95),
                    bytes(s.bytes_inline),
                    bytes(s.bytes_by_reference),
                ]
            })
            .collect(),
    };
    let parts = Table {
        title: "Per-task time split, µs (median / p95)",
        headers: vec!["run_dir", "wait_parents", "queue", "input", "body", "result", "overhead"],
        rows: r
            .runs
            .iter()
            .map(|s| {
                let p = &s.parts;
                vec![
                    s.run_dir.clone(),
                    med_p95(p.wait),
                    med_p95(p.queue),
                    med_p95(p.input),
                    med_p95(p.body),
                    med_p95(p.result),
                    med_p95(p.overhead),
                ]
            })
            .collect(),
    };
    let names = Table {
        title: "Per task name, µs (medians; overhead also p95)",
        headers: vec![
            "run_dir",
            "name",
            "tasks",
            "failed",
            "wait_parents",
            "queue",
            "input",
            "body",
            "result",
            "overhead",
            "overhead_p95",
        ],
        rows: r
            .runs
            .iter()
            .flat_map(|s| {
                s.by_name.iter().map(|n| {
                    let p: &PartStats = &n.parts;
                    vec![
                        s.run_dir.clone(),
                        n.name.clone(),
                        n.tasks.to_string(),
                        n.failed.to_string(),
                        med(p.wait),
                        med(p.queue),
                        med(p.input),
                        med(p.body),
                        med(p.result),
                        med(p.overhead),
                        us(p.overhead, |q| q.p95),
                    ]
                })
            })
            .collect(),
    };
    let mut out = vec![runs, parts, names];
    if r.runs.len() > 1 {
        out.push(Table {
            title: "Comparison (repeated runs: median [min–max])",
            headers: vec![
                "app",
                "executor",
                "data",
                "options",
                "runs",
                "makespan_s",
                "tasks_per_s",
                "overhead_median_us",
            ],
            rows: r.groups.iter().map(comparison_row).collect(),
        });
    }
    out
}

fn comparison_row(g: &Group) -> Vec<String> {
    let rep = g.runs.len() > 1;
    vec![
        g.app.clone(),
        g.executor.clone(),
        g.data.clone(),
        if g.differs.is_empty() { "-".into() } else { g.differs.clone() },
        g.runs.len().to_string(),
        spread(g.makespan_s, 3, 1.0, rep),
        spread(g.throughput_per_s, 1, 1.0, rep),
        g.overhead_median_s.map_or(NA.into(), |s| spread(s, 1, 1e6, rep)),
    ]
}

/// Aligned text tables, each under its title.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    for t in tables(r) {
        let mut widths: Vec<usize> = t.headers.iter().map(|h| h.chars().count()).collect();
        for row in &t.rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> =
                cells.iter().zip(&widths).map(|(c, w)| format!("{}{}", c, " ".repeat(w - c.chars().count()))).collect();
            padded.join("  ").trim_end().to_string() + "\n"
        };
        out.push_str(&format!("{}\n", t.title));
        out.push_str(&line(t.headers.clone()));
        out.push_str(&line(
            widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().iter().map(String::as_str).collect(),
        ));
        for row in &t.rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out.push('\n');
    }
    out
}

/// The tables as GitHub Markdown.
pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    for t in tables(r) {
        out.push_str(&format!(
            "### {}\n\n| {} |\n|{}\n",
            t.title,
            t.headers.join(" | "),
            "---|".repeat(t.headers.len())
        ));
        for row in &t.rows {
            let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out.push('\n');
    }
    out
}

/// The column names of [`csv`](fn@csv), `run_dir` first.
pub const CSV_COLUMNS: &[&str] = &[
    "run_dir",
    "suite",
    "app",
    "executor",
    "data",
    "options",
    "status",
    "tasks",
    "failed",
    "makespan_s",
    "makespan_from",
    "throughput_per_s",
    "overhead_median_us",
    "overhead_p95_us",
    "wait_parents_median_us",
    "wait_parents_p95_us",
    "queue_median_us",
    "queue_p95_us",
    "input_median_us",
    "input_p95_us",
    "body_median_us",
    "body_p95_us",
    "result_median_us",
    "result_p95_us",
    "bytes_inline",
    "bytes_by_reference",
    "remote_tasks",
    "app_elapsed_s",
];

fn csv_row(s: &RunSummary) -> Vec<String> {
    let f = |q: Option<Quantiles>| match q {
        Some(q) => [format!("{:.3}", q.median * 1e6), format!("{:.3}", q.p95 * 1e6)],
        None => [String::new(), String::new()],
    };
    let p = &s.parts;
    let mut row = vec![
        s.run_dir.clone(),
        serde_json::to_value(s.suite).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        s.app.clone(),
        s.executor.clone(),
        s.data.clone(),
        s.options.clone(),
        s.status.clone(),
        s.tasks.to_string(),
        s.failed.to_string(),
        format!("{:.6}", s.makespan_s),
        s.makespan_from.clone(),
        format!("{:.3}", s.throughput_per_s),
    ];
    for q in [p.overhead, p.wait, p.queue, p.input, p.body, p.result] {
        row.extend(f(q));
    }
    row.push(s.bytes_inline.map_or(String::new(), |b| b.to_string()));
    row.push(s.bytes_by_reference.map_or(String::new(), |b| b.to_string()));
    row.push(s.remote_tasks.to_string());
    row.push(s.app_elapsed_s.map_or(String::new(), |e| format!("{:.3}", e)));
    row
}

/// One CSV row per run (n/a is an empty cell), columns [`CSV_COLUMNS`].
pub fn csv(r: &Report) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_COLUMNS).expect("CSV to memory");
    for s in &r.runs {
        w.write_record(csv_row(s)).expect("CSV to memory");
    }
    String::from_utf8(w.into_inner().expect("CSV to memory")).expect("CSV of UTF-8 cells")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One self-contained HTML page: the tables, then each run's charts and the comparison chart
/// as inline SVG (no script, no network).
pub fn html(runs: &[Run], r: &Report) -> Result<String, String> {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>taps report</title>\n<style>\
         body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}\
         td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}td:first-child,th{text-align:left}\
         figure{display:inline-block;margin:0 1em 1em 0}</style></head><body>\n<h1>taps report</h1>\n",
    );
    for t in tables(r) {
        out.push_str(&format!("<h2>{}</h2>\n<table>\n<tr>", esc(t.title)));
        for h in &t.headers {
            out.push_str(&format!("<th>{}</th>", esc(h)));
        }
        out.push_str("</tr>\n");
        for row in &t.rows {
            out.push_str("<tr>");
            for c in row {
                out.push_str(&format!("<td>{}</td>", esc(c)));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
    }
    out.push_str("<h2>Charts</h2>\n");
    for (title, svg) in charts::svgs(runs, r)? {
        out.push_str(&format!("<figure><figcaption>{}</figcaption>\n{}\n</figure>\n", esc(&title), svg));
    }
    out.push_str("</body></html>\n");
    Ok(out)
}
