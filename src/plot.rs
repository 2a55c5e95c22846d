//! Charts the apps write into their run directories (PNG, drawn with plotters).
//!
//! Text needs a TrueType font: the first of [`FONT_FILES`] that exists is used (Debian's
//! `fonts-dejavu-core`, installed by `scripts/install-deps.sh`). Without one, charts are still
//! drawn, without their labels, and a warning says which package brings the font.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

/// Font files tried in order for the charts' text.
pub const FONT_FILES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// The family name charts use for their text.
pub const FAMILY: &str = "sans-serif";

/// A chart that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {message}")]
pub struct PlotError {
    /// The image being drawn.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

impl PlotError {
    fn new(path: &Path, e: impl std::fmt::Display) -> Self {
        PlotError { path: path.display().to_string(), message: e.to_string() }
    }
}

/// Registers the charts' font once per process; true if text can be drawn.
pub fn fonts() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        for file in FONT_FILES {
            if let Ok(bytes) = std::fs::read(file) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        tracing::warn!(
            "no font for the charts' text ({}): charts are drawn without labels; install fonts-dejavu-core",
            FONT_FILES[0]
        );
        false
    })
}

/// Which way a score improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Larger is better (an ionisation energy searched for its maximum).
    Higher,
    /// Smaller is better (a docking affinity in kcal/mol).
    Lower,
}

/// The running best of `points` taken in order of x: one point per x where the best changes,
/// plus the last x (the step line of [`best_against_time`]).
pub fn running_best(points: &[(f64, f64)], better: Better) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (x, y) in sorted {
        match out.last() {
            Some(&(_, best)) if !improves(y, best, better) => {}
            _ => out.push((x, y)),
        }
    }
    if let Some(&(x, best)) = out.last()
        && let Some(x_last) = points.iter().map(|p| p.0).filter(|x| x.is_finite()).max_by(f64::total_cmp)
        && x < x_last
    {
        out.push((x_last, best));
    }
    out
}

fn improves(y: f64, best: f64, better: Better) -> bool {
    match better {
        Better::Higher => y > best,
        Better::Lower => y < best,
    }
}

/// Writes a PNG of every result (x = time, y = score) with a dashed step line of the running
/// best, as the Python suite's docking and moldesign figures do. Draws an empty frame when there
/// are no finite points.
pub fn best_against_time(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64)],
    better: Better,
) -> Result<(), PlotError> {
    let finite: Vec<(f64, f64)> = points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let (x0, x1) = span(finite.iter().map(|p| p.0), 0.0);
    let (y0, y1) = span(finite.iter().map(|p| p.1), 0.05);
    let text = fonts();
    let err = |e: &dyn std::fmt::Display| PlotError::new(path, e);
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if text {
        builder.caption(title, (FAMILY, 24)).x_label_area_size(45).y_label_area_size(70);
    }
    let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(|e| err(&e))?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(WHITE.mix(0.0));
    if text {
        mesh.x_desc(x_label).y_desc(y_label).label_style((FAMILY, 16));
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| err(&e))?;
    chart
        .draw_series(finite.iter().map(|&(x, y)| Circle::new((x, y), 4, BLUE.mix(0.6).filled())))
        .map_err(|e| err(&e))?;
    let best = running_best(&finite, better);
    let mut steps = Vec::with_capacity(best.len() * 2);
    for (i, &(x, y)) in best.iter().enumerate() {
        if i > 0 {
            steps.push((x, best[i - 1].1));
        }
        steps.push((x, y));
    }
    chart.draw_series(DashedLineSeries::new(steps, 8, 5, RED.stroke_width(2))).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The range of `values` widened by `pad` of its width (a unit range around a single value; 0..1
/// when empty).
fn span(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let w = (hi - lo) * pad;
    (lo - w, hi + w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_best_steps_only_when_the_score_improves() {
        let pts = [(3.0, -5.0), (1.0, -4.0), (2.0, -3.0), (4.0, -4.5), (5.0, -6.0), (6.0, -1.0)];
        assert_eq!(running_best(&pts, Better::Lower), vec![(1.0, -4.0), (3.0, -5.0), (5.0, -6.0), (6.0, -6.0)]);
        assert_eq!(running_best(&pts, Better::Higher), vec![(1.0, -4.0), (2.0, -3.0), (6.0, -1.0)]);
        assert!(running_best(&[], Better::Higher).is_empty());
    }

    #[test]
    fn a_chart_is_a_png_of_the_asked_size_with_its_points_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("best.png");
        let pts: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, -(i as f64 % 7.0))).collect();
        best_against_time(&path, "Docking", "Walltime (s)", "Score", &pts, Better::Lower).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        // IHDR: width and height, big-endian, at bytes 16..24.
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), (900, 600));
        let empty = dir.path().join("empty.png");
        best_against_time(&empty, "t", "x", "y", &[], Better::Higher).unwrap();
        assert!(bytes.len() > std::fs::metadata(&empty).unwrap().len() as usize, "points add to the image");
    }

    #[test]
    fn a_chart_in_a_missing_directory_is_an_error_naming_the_file() {
        let e = best_against_time(Path::new("/nonexistent/dir/x.png"), "t", "x", "y", &[(0.0, 1.0)], Better::Higher)
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dir/x.png"), "{}", e);
    }
}
