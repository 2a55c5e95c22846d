//! The terrain: a square heightmap of fractal Perlin noise, smoothed with a Gaussian filter and
//! scaled to `[0, height]` by its range; the surface is the triangle mesh over the grid.

use std::sync::Arc;

use noise::{NoiseFn, Perlin};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// A square heightmap: `size × size` heights, `spacing` metres apart, with grid point `(i, j)`
/// (row `i`, column `j`) at `x = j·spacing`, `y = i·spacing`. Each grid cell is two triangles
/// split along the diagonal from `(i, j)` to `(i + 1, j + 1)`; [`Terrain::surface_height`]
/// interpolates on them, as the simulation's triangle mesh does.
///
/// The heights sit behind an `Arc`, so the in-process executor hands one heightmap to every
/// task; out of process each task receives its own serialised copy (`4·size²` bytes and a
/// few), as the reference ships its mesh to every task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Terrain {
    /// Grid points per side.
    pub size: u32,
    /// Distance between neighbouring grid points, in metres (1 / terrain_resolution).
    pub spacing: f32,
    /// Heights in metres, row by row (`heights[i·size + j]`).
    pub heights: Arc<[f32]>,
}

crate::task_arg!(Terrain);

/// How the heightmap is made (the reference's `terrain_*` options).
#[derive(Clone, Debug, PartialEq)]
pub struct TerrainSpec {
    /// Side of the terrain in metres.
    pub width: u64,
    /// Largest height after scaling, in metres.
    pub height: f64,
    /// Grid points per metre.
    pub resolution: u64,
    /// Noise coordinates are metres divided by this.
    pub scale: f64,
    /// Octaves of the fractal noise.
    pub octaves: u32,
    /// Amplitude factor from one octave to the next.
    pub persistence: f64,
    /// Frequency factor from one octave to the next.
    pub lacunarity: f64,
    /// Sigma of the Gaussian smoothing, in grid points (0: none).
    pub filter_size: u64,
}

impl TerrainSpec {
    /// Grid points per side: width × resolution.
    pub fn size(&self) -> u64 {
        self.width.saturating_mul(self.resolution)
    }
}

impl Terrain {
    /// Generates the terrain of `spec` from `seed`: fractal Perlin noise ([`fractal_noise`]),
    /// a Gaussian filter with sigma = filter_size ([`gaussian_filter`]), then
    /// `(h − min) × height / (max − min)` (a flat map stays at 0).
    pub fn generate(spec: &TerrainSpec, seed: u64) -> Terrain {
        let d = spec.size() as usize;
        let res = spec.resolution as f64;
        let perlin = Perlin::new(fold_seed(seed));
        let mut h = vec![0.0f64; d * d];
        h.par_chunks_mut(d).enumerate().for_each(|(i, row)| {
            for (j, v) in row.iter_mut().enumerate() {
                let point = [(i as f64 / res) / spec.scale, (j as f64 / res) / spec.scale];
                *v = fractal_noise(&perlin, point, spec.octaves, spec.persistence, spec.lacunarity);
            }
        });
        let h = gaussian_filter(&h, d, spec.filter_size as f64);
        let (min, max) = h.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let range = max - min;
        let heights: Vec<f32> =
            h.iter().map(|&v| if range > 0.0 { ((v - min) * spec.height / range) as f32 } else { 0.0 }).collect();
        Terrain { size: d as u32, spacing: (1.0 / res) as f32, heights: heights.into() }
    }

    /// Height at grid point (row `i`, column `j`).
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.heights[i * self.size as usize + j]
    }

    /// Side of the mesh in metres: `(size − 1) × spacing`.
    pub fn extent(&self) -> f64 {
        (self.size.saturating_sub(1)) as f64 * self.spacing as f64
    }

    /// Checks that the heights fill the grid (a terrain from the wire is checked before use).
    pub fn check(&self) -> Result<(), String> {
        let n = self.size as u64 * self.size as u64;
        if self.size < 2 || self.heights.len() as u64 != n || !(self.spacing > 0.0 && self.spacing.is_finite()) {
            return Err(format!(
                "bad terrain: size {} (at least 2), {} heights (need size²), spacing {}",
                self.size,
                self.heights.len(),
                self.spacing
            ));
        }
        if let Some(k) = self.heights.iter().position(|h| !h.is_finite()) {
            return Err(format!("bad terrain: height {} is {}", k, self.heights[k]));
        }
        Ok(())
    }

    /// The mesh: vertices `(j·spacing, i·spacing, h)` and two triangles per cell, counter-clockwise
    /// seen from above (normals up).
    pub fn mesh(&self) -> (Vec<[f32; 3]>, Vec<[u32; 3]>) {
        let d = self.size as usize;
        let s = self.spacing;
        let mut vertices = Vec::with_capacity(d * d);
        for i in 0..d {
            for j in 0..d {
                vertices.push([j as f32 * s, i as f32 * s, self.at(i, j)]);
            }
        }
        let mut triangles = Vec::with_capacity(2 * (d - 1) * (d - 1));
        let id = |i: usize, j: usize| (i * d + j) as u32;
        for i in 0..d - 1 {
            for j in 0..d - 1 {
                triangles.push([id(i, j), id(i, j + 1), id(i + 1, j + 1)]);
                triangles.push([id(i, j), id(i + 1, j + 1), id(i + 1, j)]);
            }
        }
        (vertices, triangles)
    }

    /// Height of the mesh surface and its gradient (dh/dx, dh/dy) at `(x, y)`, or None off
    /// the terrain.
    pub fn surface(&self, x: f64, y: f64) -> Option<(f64, [f64; 2])> {
        let s = self.spacing as f64;
        let last = (self.size - 1) as usize;
        let (gx, gy) = (x / s, y / s);
        if !(gx >= 0.0 && gy >= 0.0 && gx <= last as f64 && gy <= last as f64) {
            return None;
        }
        let (j, i) = ((gx.floor() as usize).min(last - 1), (gy.floor() as usize).min(last - 1));
        let (u, v) = (gx - j as f64, gy - i as f64);
        let h = |i, j| self.at(i, j) as f64;
        let (h00, h01, h10, h11) = (h(i, j), h(i, j + 1), h(i + 1, j), h(i + 1, j + 1));
        Some(if u >= v {
            // Triangle (i, j), (i, j + 1), (i + 1, j + 1).
            (h00 + u * (h01 - h00) + v * (h11 - h01), [(h01 - h00) / s, (h11 - h01) / s])
        } else {
            // Triangle (i, j), (i + 1, j + 1), (i + 1, j).
            (h00 + v * (h10 - h00) + u * (h11 - h10), [(h11 - h10) / s, (h10 - h00) / s])
        })
    }

    /// Height of the mesh surface at `(x, y)`, or None off the terrain.
    pub fn surface_height(&self, x: f64, y: f64) -> Option<f64> {
        self.surface(x, y).map(|(h, _)| h)
    }
}

/// The 32-bit Perlin seed of a 64-bit run seed (both halves count).
fn fold_seed(seed: u64) -> u32 {
    (seed as u32) ^ ((seed >> 32) as u32)
}

/// The Python `noise` package's `pnoise2(x, y, octaves, persistence, lacunarity)`: the sum over
/// octaves `k = 0..octaves` of `persistence^k · perlin(lacunarity^k · point)`, divided by the
/// sum of the amplitudes `persistence^k`.
///
/// The `noise` crate's `Fbm` is not used because it differs from pnoise2: it seeds octave `k`
/// with `seed + k` (pnoise2 uses one lattice for all) and weights octave `k` by
/// `persistence^(k+1)` before normalising, which gives NaN for persistence 0 (pnoise2 gives the
/// first octave).
pub fn fractal_noise(perlin: &Perlin, point: [f64; 2], octaves: u32, persistence: f64, lacunarity: f64) -> f64 {
    let (mut total, mut max, mut freq, mut amp) = (0.0, 0.0, 1.0, 1.0);
    for _ in 0..octaves {
        total += perlin.get([point[0] * freq, point[1] * freq]) * amp;
        max += amp;
        freq *= lacunarity;
        amp *= persistence;
    }
    if max > 0.0 { total / max } else { 0.0 }
}

/// A `d × d` row-major grid smoothed by a Gaussian of standard deviation `sigma` (in grid
/// points), as `scipy.ndimage.gaussian_filter(h, sigma)`: separable, kernel radius
/// `round(4·sigma)`, weights normalised to 1, edges mirrored (`mode="reflect"`: `c b a | a b c`).
/// `sigma = 0` returns the grid unchanged.
pub fn gaussian_filter(h: &[f64], d: usize, sigma: f64) -> Vec<f64> {
    if sigma <= 0.0 || d == 0 {
        return h.to_vec();
    }
    let radius = (4.0 * sigma + 0.5) as i64;
    let mut weights: Vec<f64> = (-radius..=radius).map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp()).collect();
    let sum: f64 = weights.iter().sum();
    weights.iter_mut().for_each(|w| *w /= sum);
    let reflect = |k: i64| {
        let p = 2 * d as i64;
        let m = k.rem_euclid(p);
        (if m >= d as i64 { p - 1 - m } else { m }) as usize
    };
    // Along rows, then along columns (each output row reads whole input rows).
    let mut rows = vec![0.0; d * d];
    rows.par_chunks_mut(d).enumerate().for_each(|(i, out)| {
        let src = &h[i * d..(i + 1) * d];
        for (j, o) in out.iter_mut().enumerate() {
            *o = weights.iter().enumerate().map(|(k, w)| w * src[reflect(j as i64 + k as i64 - radius)]).sum();
        }
    });
    let mut out = vec![0.0; d * d];
    out.par_chunks_mut(d).enumerate().for_each(|(i, o)| {
        for (k, w) in weights.iter().enumerate() {
            let src = &rows[reflect(i as i64 + k as i64 - radius) * d..][..d];
            for (x, s) in o.iter_mut().zip(src) {
                *x += w * s;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TerrainSpec {
        TerrainSpec {
            width: 20,
            height: 3.0,
            resolution: 10,
            scale: 10.0,
            octaves: 3,
            persistence: 0.2,
            lacunarity: 2.0,
            filter_size: 2,
        }
    }

    #[test]
    fn heights_span_zero_to_height_and_depend_on_the_seed() {
        let t = Terrain::generate(&spec(), 7);
        t.check().unwrap();
        assert_eq!(t.size, 200);
        let (min, max) = t.heights.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert_eq!(min, 0.0);
        assert!((max - 3.0).abs() < 1e-5, "max {}", max);
        assert_eq!(Terrain::generate(&spec(), 7), t, "same seed, same terrain");
        assert_ne!(Terrain::generate(&spec(), 8).heights, t.heights, "another seed, another terrain");
    }

    #[test]
    fn a_flat_noise_gives_a_flat_terrain_not_nan() {
        // Integer noise coordinates are lattice points, where Perlin noise is 0.
        let flat = TerrainSpec { resolution: 1, scale: 1.0, lacunarity: 1.0, width: 5, ..spec() };
        let t = Terrain::generate(&flat, 3);
        assert!(t.heights.iter().all(|&h| h == 0.0), "{:?}", t.heights);
    }

    #[test]
    fn fractal_noise_is_the_normalised_octave_sum() {
        let p = Perlin::new(1);
        let pt = [0.37, 1.91];
        let one = p.get(pt);
        assert_eq!(fractal_noise(&p, pt, 1, 0.2, 2.0), one);
        let want = (one + 0.5 * p.get([0.74, 3.82]) + 0.25 * p.get([1.48, 7.64])) / 1.75;
        assert!((fractal_noise(&p, pt, 3, 0.5, 2.0) - want).abs() < 1e-12);
        // Persistence 0 is the first octave (the crate's Fbm gives NaN there).
        assert_eq!(fractal_noise(&p, pt, 3, 0.0, 2.0), one);
    }

    #[test]
    fn gaussian_filter_matches_scipy() {
        // scipy.ndimage.gaussian_filter of a unit impulse in the middle of a 21 × 21 grid,
        // sigma 2: the outer product of the normalised 1-D kernel (radius 8).
        let d = 21;
        let mut h = vec![0.0; d * d];
        h[10 * d + 10] = 1.0;
        let g = gaussian_filter(&h, d, 2.0);
        let k: Vec<f64> = (-8..=8).map(|x: i32| (-(x * x) as f64 / 8.0).exp()).collect();
        let s: f64 = k.iter().sum();
        for i in 0..d {
            for j in 0..d {
                let want =
                    if (2..=18).contains(&i) && (2..=18).contains(&j) { k[i - 2] * k[j - 2] / (s * s) } else { 0.0 };
                assert!((g[i * d + j] - want).abs() < 1e-15, "({}, {})", i, j);
            }
        }
        assert!((g[10 * d + 10] - 0.039790135140764016).abs() < 1e-15, "scipy's centre value");
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-12, "mass is kept");
        // Mirrored edges: an impulse in the corner keeps its mass, and a constant stays constant.
        let mut c = vec![0.0; d * d];
        c[0] = 1.0;
        assert!((gaussian_filter(&c, d, 2.0).iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(gaussian_filter(&[2.5; 16], 4, 3.0).iter().all(|v| (v - 2.5).abs() < 1e-12));
        // scipy.ndimage.gaussian_filter1d([1, 2, 3, 4], 1.0, mode="reflect") (kernel radius 4).
        let row = [1.0, 2.0, 3.0, 4.0];
        let mut grid = Vec::new();
        for _ in 0..4 {
            grid.extend_from_slice(&row);
        }
        let got = gaussian_filter(&grid, 4, 1.0);
        let want = [1.42690712, 2.06312251, 2.93687749, 3.57309288];
        for (g, w) in got[..4].iter().zip(want) {
            assert!((g - w).abs() < 1e-7, "{:?}", &got[..4]);
        }
        assert_eq!(gaussian_filter(&grid, 4, 0.0), grid);
    }

    #[test]
    fn surface_interpolates_on_the_mesh_triangles() {
        let t = Terrain { size: 2, spacing: 0.5, heights: vec![0.0, 1.0, 2.0, 4.0].into() };
        // Corners.
        assert_eq!(t.surface_height(0.0, 0.0), Some(0.0));
        assert_eq!(t.surface_height(0.5, 0.0), Some(1.0));
        assert_eq!(t.surface_height(0.0, 0.5), Some(2.0));
        assert_eq!(t.surface_height(0.5, 0.5), Some(4.0));
        // Below the diagonal: plane through (0,0,0), (0.5,0,1), (0.5,0.5,4).
        let (h, g) = t.surface(0.4, 0.1).unwrap();
        assert!((h - (0.8 + 0.6)).abs() < 1e-12 && g == [2.0, 6.0], "{} {:?}", h, g);
        // Above it: plane through (0,0,0), (0.5,0.5,4), (0,0.5,2).
        let (h, g) = t.surface(0.1, 0.4).unwrap();
        assert!((h - (0.4 + 1.6)).abs() < 1e-12 && g == [4.0, 4.0], "{} {:?}", h, g);
        assert_eq!(t.surface_height(0.6, 0.1), None);
        assert_eq!(t.surface_height(-0.01, 0.1), None);
        // The mesh has the same triangles, counter-clockwise from above.
        let (v, tris) = t.mesh();
        assert_eq!(v, vec![[0.0, 0.0, 0.0], [0.5, 0.0, 1.0], [0.0, 0.5, 2.0], [0.5, 0.5, 4.0]]);
        assert_eq!(tris, vec![[0, 1, 3], [0, 3, 2]]);
        for tri in tris {
            let [a, b, c] = tri.map(|k| v[k as usize]);
            let cross_z = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
            assert!(cross_z > 0.0);
        }
    }

    #[test]
    fn bad_terrains_are_refused() {
        let ok = Terrain { size: 2, spacing: 0.5, heights: vec![0.0; 4].into() };
        assert!(ok.check().is_ok());
        assert!(Terrain { heights: vec![0.0; 3].into(), ..ok.clone() }.check().is_err());
        assert!(Terrain { spacing: 0.0, ..ok.clone() }.check().is_err());
        assert!(Terrain { heights: vec![0.0, f32::NAN, 0.0, 0.0].into(), ..ok.clone() }.check().is_err());
        assert!(Terrain { size: 1, heights: vec![0.0].into(), ..ok }.check().is_err());
    }
}
