//! The app's pictures, drawn with plotters: `contour.png` (the terrain's contour map with the
//! balls' initial and final positions, side by side) and `terrain.png` (the terrain as a 3-D
//! surface coloured by the density of balls, initially and finally).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::terrain::Terrain;
use crate::plot::{FAMILY, fonts};

/// Size of `contour.png` in pixels.
pub const CONTOUR_SIZE: (u32, u32) = (1600, 800);
/// Size of `terrain.png` in pixels.
pub const TERRAIN_SIZE: (u32, u32) = (1600, 800);
/// Contour levels (as the reference's `contour(..., levels=10)`).
const LEVELS: usize = 10;
/// Most quads per side drawn in the 3-D surface (the grid is subsampled beyond).
const SURFACE_QUADS: usize = 60;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Draws `contour.png`: left the initial, right the final positions (clamped to the terrain, as
/// the reference does) as white dots on the terrain's contour map (10 levels, filled in greens).
pub fn contour(path: &Path, terrain: &Terrain, initial: &[[f64; 2]], last: &[[f64; 2]]) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, CONTOUR_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(CONTOUR_SIZE.0 / 2);
    for (area, points, title) in [(&left, initial, "Initial"), (&right, last, "Final")] {
        contour_panel(area, terrain, points, title)?;
    }
    root.present()?;
    Ok(())
}

fn contour_panel(area: &Area, terrain: &Terrain, points: &[[f64; 2]], title: &str) -> anyhow::Result<()> {
    let w = terrain.extent();
    let text = fonts();
    let mut builder = ChartBuilder::on(area);
    builder.margin(20);
    if text {
        builder.caption(title, (FAMILY, 28)).x_label_area_size(45).y_label_area_size(55);
    }
    let mut chart = builder.build_cartesian_2d(0.0..w, 0.0..w)?;
    if text {
        chart.configure_mesh().disable_mesh().x_desc("x (m)").y_desc("y (m)").label_style((FAMILY, 16)).draw()?;
    }
    let (min, max) = min_max(&terrain.heights);
    let levels: Vec<f64> = (1..=LEVELS).map(|k| min + (max - min) * k as f64 / (LEVELS + 1) as f64).collect();
    let band = |h: f64| levels.iter().filter(|&&l| h >= l).count();
    let d = terrain.size as usize;
    let s = terrain.spacing as f64;
    // Filled bands: each grid cell in the colour of its mean height's band.
    chart.draw_series((0..d - 1).flat_map(|i| (0..d - 1).map(move |j| (i, j))).map(|(i, j)| {
        let mean =
            [(i, j), (i, j + 1), (i + 1, j), (i + 1, j + 1)].iter().map(|&(a, b)| terrain.at(a, b) as f64).sum::<f64>()
                / 4.0;
        let c = green(band(mean) as f64 / LEVELS as f64);
        Rectangle::new([(j as f64 * s, i as f64 * s), ((j + 1) as f64 * s, (i + 1) as f64 * s)], c.filled())
    }))?;
    // Contour lines on the mesh triangles (marching triangles: no ambiguous cells).
    let line = RGBColor(20, 60, 20).stroke_width(2);
    for &level in &levels {
        chart.draw_series(
            contour_segments(terrain, level).into_iter().map(|seg| PathElement::new(seg.to_vec(), line)),
        )?;
    }
    let inside = |v: f64| v.clamp(0.0, w);
    chart.draw_series(points.iter().map(|p| Circle::new((inside(p[0]), inside(p[1])), 5, WHITE.filled())))?;
    chart.draw_series(points.iter().map(|p| Circle::new((inside(p[0]), inside(p[1])), 5, BLACK.stroke_width(1))))?;
    Ok(())
}

/// The segments of the `level` contour of the terrain's triangle mesh, in metres.
pub fn contour_segments(terrain: &Terrain, level: f64) -> Vec<[(f64, f64); 2]> {
    let d = terrain.size as usize;
    let s = terrain.spacing as f64;
    let vertex = |i: usize, j: usize| (j as f64 * s, i as f64 * s, terrain.at(i, j) as f64);
    let mut out = Vec::new();
    for i in 0..d - 1 {
        for j in 0..d - 1 {
            let (a, b, c, e) = (vertex(i, j), vertex(i, j + 1), vertex(i + 1, j + 1), vertex(i + 1, j));
            for tri in [[a, b, c], [a, c, e]] {
                let mut pts = Vec::with_capacity(2);
                for k in 0..3 {
                    let (p, q) = (tri[k], tri[(k + 1) % 3]);
                    if (p.2 < level) != (q.2 < level) {
                        let t = (level - p.2) / (q.2 - p.2);
                        pts.push((p.0 + t * (q.0 - p.0), p.1 + t * (q.1 - p.1)));
                    }
                }
                if let [p, q] = pts[..] {
                    out.push([p, q]);
                }
            }
        }
    }
    out
}

/// Draws `terrain.png`: left the initial, right the final positions, each as the terrain's
/// surface in 3-D coloured (jet) by the density of balls over it (a Gaussian kernel density
/// estimate with Scott's bandwidth, as the reference's `gaussian_kde`).
pub fn surface(path: &Path, terrain: &Terrain, initial: &[[f64; 2]], last: &[[f64; 2]]) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, TERRAIN_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(TERRAIN_SIZE.0 / 2);
    for (area, points, title) in [(&left, initial, "Initial"), (&right, last, "Final")] {
        surface_panel(area, terrain, points, title)?;
    }
    root.present()?;
    Ok(())
}

fn surface_panel(area: &Area, terrain: &Terrain, points: &[[f64; 2]], title: &str) -> anyhow::Result<()> {
    let w = terrain.extent();
    let (min, max) = min_max(&terrain.heights);
    // The vertical axis spans 1.5 times the height range (at least a tenth of the width, at
    // most all of it), so the hills fill two thirds of the box.
    let top = min + ((max - min) * 1.5).max(w / 10.0).min(w).max(1e-3);
    let mut builder = ChartBuilder::on(area);
    builder.margin(20);
    if fonts() {
        builder.caption(format!("{}: terrain coloured by ball density", title), (FAMILY, 28));
    }
    let mut chart = builder.build_cartesian_3d(0.0..w, min..top, 0.0..w)?;
    chart.with_projection(|mut p| {
        p.yaw = 0.6;
        p.pitch = 0.35;
        p.scale = 1.0;
        p.into_matrix()
    });
    // Quads over a subsampled grid, x → x, height → up, y → z.
    let d = terrain.size as usize;
    let step = (d - 1).div_ceil(SURFACE_QUADS).max(1);
    let idx: Vec<usize> = (0..d).step_by(step).chain((!(d - 1).is_multiple_of(step)).then_some(d - 1)).collect();
    let s = terrain.spacing as f64;
    let clamped: Vec<[f64; 2]> = points.iter().map(|p| [p[0].clamp(0.0, w), p[1].clamp(0.0, w)]).collect();
    let kde = Kde::new(&clamped);
    let mut quads = Vec::new();
    for a in idx.windows(2) {
        for b in idx.windows(2) {
            let (i0, i1, j0, j1) = (a[0], a[1], b[0], b[1]);
            let corner = |i: usize, j: usize| (j as f64 * s, terrain.at(i, j) as f64, i as f64 * s);
            let quad = [corner(i0, j0), corner(i0, j1), corner(i1, j1), corner(i1, j0)];
            let (cx, cy) = ((j0 + j1) as f64 * s / 2.0, (i0 + i1) as f64 * s / 2.0);
            quads.push((quad, kde.density(cx, cy)));
        }
    }
    let peak = quads.iter().map(|q| q.1).fold(0.0, f64::max);
    // Painter's algorithm: farthest quads first.
    let coord = chart.as_coord_spec();
    let depth =
        |q: &[(f64, f64, f64); 4]| q.iter().map(|p| coord.projected_depth(&p.0, &p.1, &p.2) as i64).sum::<i64>();
    quads.sort_by_key(|(q, _)| std::cmp::Reverse(depth(q)));
    chart.draw_series(quads.into_iter().map(|(q, density)| {
        let t = if peak > 0.0 { density / peak } else { 0.0 };
        Polygon::new(q.to_vec(), jet(t).filled())
    }))?;
    Ok(())
}

/// A 2-D Gaussian kernel density estimate with Scott's rule (bandwidth `n^(-1/6)` times the
/// data's standard deviation per axis, at least 1 mm so that coincident points still work).
struct Kde<'a> {
    points: &'a [[f64; 2]],
    bandwidth: [f64; 2],
}

impl<'a> Kde<'a> {
    fn new(points: &'a [[f64; 2]]) -> Self {
        let n = points.len().max(1) as f64;
        let factor = n.powf(-1.0 / 6.0);
        let bandwidth = [0, 1].map(|k| {
            let mean = points.iter().map(|p| p[k]).sum::<f64>() / n;
            let var = points.iter().map(|p| (p[k] - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
            (var.sqrt() * factor).max(1e-3)
        });
        Kde { points, bandwidth }
    }

    fn density(&self, x: f64, y: f64) -> f64 {
        let [bx, by] = self.bandwidth;
        self.points.iter().map(|p| (-0.5 * (((x - p[0]) / bx).powi(2) + ((y - p[1]) / by).powi(2))).exp()).sum::<f64>()
            / (self.points.len().max(1) as f64 * 2.0 * std::f64::consts::PI * bx * by)
    }
}

/// Smallest and largest height.
fn min_max(h: &[f32]) -> (f64, f64) {
    let (a, b) = h.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    (a as f64, b as f64)
}

/// A green of lightness decreasing with `t` in [0, 1] (low ground light, high ground dark).
fn green(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(lerp(200.0, 20.0), lerp(235.0, 110.0), lerp(170.0, 30.0))
}

/// matplotlib's `jet` colour map at `t` in [0, 1] (blue, cyan, yellow, red).
pub fn jet(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let ch = |c: f64| ((1.5 - (4.0 * t - c).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    RGBColor(ch(3.0), ch(2.0), ch(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contour_of_a_plane_is_a_straight_line() {
        // h = x on a 5 × 5 grid of 1 m: the level 1.5 contour is the line x = 1.5.
        let t = Terrain { size: 5, spacing: 1.0, heights: (0..25).map(|k| (k % 5) as f32).collect::<Vec<_>>().into() };
        let segs = contour_segments(&t, 1.5);
        assert!(!segs.is_empty());
        for [p, q] in &segs {
            assert!((p.0 - 1.5).abs() < 1e-12 && (q.0 - 1.5).abs() < 1e-12, "{:?}", segs);
        }
        // It spans y = 0..4 without gaps: the segments' lengths add up to 4.
        let len: f64 = segs.iter().map(|[p, q]| ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt()).sum();
        assert!((len - 4.0).abs() < 1e-9, "{}", len);
        assert!(contour_segments(&t, 9.0).is_empty());
    }

    #[test]
    fn jet_runs_blue_to_red() {
        assert_eq!(jet(0.0), RGBColor(0, 0, 128));
        assert_eq!(jet(0.5), RGBColor(128, 255, 128));
        assert_eq!(jet(1.0), RGBColor(128, 0, 0));
    }

    #[test]
    fn kde_integrates_to_one_and_peaks_at_the_points() {
        let pts = [[1.0, 1.0], [1.2, 0.9], [3.0, 3.0]];
        let k = Kde::new(&pts);
        let h = 0.02;
        let mut total = 0.0;
        for a in 0..600 {
            for b in 0..600 {
                total += k.density(-4.0 + a as f64 * h, -4.0 + b as f64 * h) * h * h;
            }
        }
        assert!((total - 1.0).abs() < 1e-3, "{}", total);
        assert!(k.density(1.1, 0.95) > k.density(3.0, 3.0));
        assert!(Kde::new(&[[2.0, 2.0]]).density(2.0, 2.0).is_finite(), "one point");
    }
}
