//! The synthetic sky: a grid of overlapping TAN-projected float32 FITS images of one star field,
//! each with a background of its own (an offset and a slope), which the mosaic must remove.
//!
//! Each image has its own tangent point (its centre), so Montage really reprojects them; the
//! stars are Gaussian spots placed in sky coordinates, the same in every image that sees them.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Centre of the field (degrees): away from the poles and from RA 0/360.
pub const CENTRE: (f64, f64) = (150.0, 20.0);
/// Pixel scale (degrees per pixel, 7.2"). At 0.0005°/px Debian's mProject (Montage 6.0) gives
/// some edge pixels an area of π/4 sr (a loss of precision in its spherical overlaps of tiny
/// pixels), and mDiff then finds whole differences blank; at this scale it does not.
pub const SCALE: f64 = 0.002;
/// Standard deviation of a star's Gaussian profile, in pixels.
pub const STAR_SIGMA: f64 = 1.5;

/// What to draw.
#[derive(Clone, Debug, PartialEq)]
pub struct SkySpec {
    /// Images per side (grid × grid images).
    pub grid: u64,
    /// Pixels per image side.
    pub image_size: u64,
    /// Fraction of an image's width that its neighbour shares.
    pub overlap: f64,
    /// Stars in the whole field.
    pub stars: u64,
    /// The per-image offsets are spread evenly over [−offset, +offset], in a random order.
    pub background_offset: f64,
    /// Largest background slope per pixel along each axis.
    pub background_slope: f64,
    /// Standard deviation of the Gaussian pixel noise.
    pub noise: f64,
    /// Seed of everything random.
    pub seed: u64,
}

/// One image's background plane: `offset + slope_x·(x − cx) + slope_y·(y − cy)` in its own
/// pixels, centred on the image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Background {
    /// Level at the image centre.
    pub offset: f64,
    /// Change per pixel along x.
    pub slope_x: f64,
    /// Change per pixel along y.
    pub slope_y: f64,
}

/// Largest rotation of an image against north-up (degrees): like real pointings, the images are
/// neither exactly aligned with each other nor with the mosaic's grid.
pub const MAX_ROTATION: f64 = 2.0;

/// A TAN projection: tangent point (degrees), reference pixel (FITS, 1-based), rotation
/// (CROTA2, degrees), at [`SCALE`].
#[derive(Clone, Copy, Debug)]
struct Tan {
    ra0: f64,
    dec0: f64,
    crpix1: f64,
    crpix2: f64,
    rot: f64,
}

impl Tan {
    /// Sky (degrees) to pixel (FITS, 1-based); None behind the tangent plane.
    fn to_pixel(self, ra: f64, dec: f64) -> Option<(f64, f64)> {
        let (a, d, a0, d0) = (ra.to_radians(), dec.to_radians(), self.ra0.to_radians(), self.dec0.to_radians());
        let cos_c = d0.sin() * d.sin() + d0.cos() * d.cos() * (a - a0).cos();
        if cos_c <= 0.0 {
            return None;
        }
        let xi = d.cos() * (a - a0).sin() / cos_c;
        let eta = (d0.cos() * d.sin() - d0.sin() * d.cos() * (a - a0).cos()) / cos_c;
        // CD = R(rot)·diag(−SCALE, SCALE): right ascension grows to the left.
        let (sin, cos) = self.rot.to_radians().sin_cos();
        let (xi, eta) = (xi.to_degrees(), eta.to_degrees());
        let (u, v) = (cos * xi + sin * eta, -sin * xi + cos * eta);
        Some((self.crpix1 + u / -SCALE, self.crpix2 + v / SCALE))
    }

    /// Pixel (FITS, 1-based) to sky (degrees).
    fn to_sky(self, x: f64, y: f64) -> (f64, f64) {
        let (sin, cos) = self.rot.to_radians().sin_cos();
        let (u, v) = ((x - self.crpix1) * -SCALE, (y - self.crpix2) * SCALE);
        let (xi, eta) = ((cos * u - sin * v).to_radians(), (sin * u + cos * v).to_radians());
        let (a0, d0) = (self.ra0.to_radians(), self.dec0.to_radians());
        let rho = (xi * xi + eta * eta).sqrt();
        if rho == 0.0 {
            return (self.ra0, self.dec0);
        }
        let c = rho.atan();
        let dec = (c.cos() * d0.sin() + eta * c.sin() * d0.cos() / rho).asin();
        let ra = a0 + (xi * c.sin()).atan2(rho * d0.cos() * c.cos() - eta * d0.sin() * c.sin());
        (ra.to_degrees().rem_euclid(360.0), dec.to_degrees())
    }
}

/// A written sky: the image files and the background each got.
#[derive(Clone, Debug)]
pub struct Sky {
    /// The images, in grid order (row by row).
    pub images: Vec<PathBuf>,
    /// Their backgrounds, in the same order.
    pub backgrounds: Vec<Background>,
}

/// Writes the sky described by `spec` into `dir` (created), as `img_ROW_COL.fits`.
pub fn write(spec: &SkySpec, dir: &Path) -> anyhow::Result<Sky> {
    std::fs::create_dir_all(dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let (g, n) = (spec.grid as usize, spec.image_size as usize);
    let stride = n as f64 * (1.0 - spec.overlap);
    // The whole field, in pixels of one TAN plane at the centre.
    let side = stride * (g as f64 - 1.0) + n as f64;
    let field = Tan { ra0: CENTRE.0, dec0: CENTRE.1, crpix1: side / 2.0 + 0.5, crpix2: side / 2.0 + 0.5, rot: 0.0 };
    let margin = 4.0 * STAR_SIGMA;
    let stars: Vec<(f64, f64, f64)> = (0..spec.stars)
        .map(|_| {
            let (x, y) = (rng.random_range(-margin..side + margin), rng.random_range(-margin..side + margin));
            let (ra, dec) = field.to_sky(x + 0.5, y + 0.5);
            // Fluxes from 20 to 2000 (peak 1.4 to 140), log-uniform: a few bright stars, many faint.
            let flux = 10f64.powf(rng.random_range(20f64.log10()..2000f64.log10()));
            (ra, dec, flux)
        })
        .collect();
    let count = g * g;
    let mut offsets: Vec<f64> = (0..count)
        .map(|i| if count == 1 { 0.0 } else { spec.background_offset * (2.0 * i as f64 / (count - 1) as f64 - 1.0) })
        .collect();
    offsets.shuffle(&mut rng);
    let noise = Normal::new(0.0, spec.noise.max(0.0)).map_err(|e| anyhow::anyhow!("noise: {}", e))?;
    let mut sky = Sky { images: Vec::new(), backgrounds: Vec::new() };
    for (i, &offset) in offsets.iter().enumerate() {
        let (row, col) = (i / g, i % g);
        // The image's centre in the field plane (off the grid by up to a quarter pixel), then
        // its own tangent plane there, slightly rotated.
        let cx = col as f64 * stride + n as f64 / 2.0 + 0.5 + rng.random_range(-0.25..0.25);
        let cy = row as f64 * stride + n as f64 / 2.0 + 0.5 + rng.random_range(-0.25..0.25);
        let (ra0, dec0) = field.to_sky(cx, cy);
        let c = n as f64 / 2.0 + 0.5;
        let rot = rng.random_range(-MAX_ROTATION..MAX_ROTATION);
        let tan = Tan { ra0, dec0, crpix1: c, crpix2: c, rot };
        let s = spec.background_slope;
        let bg = Background {
            offset,
            slope_x: if s > 0.0 { rng.random_range(-s..=s) } else { 0.0 },
            slope_y: if s > 0.0 { rng.random_range(-s..=s) } else { 0.0 },
        };
        let mut data = vec![0f32; n * n];
        for (y, line) in data.chunks_mut(n).enumerate() {
            for (x, v) in line.iter_mut().enumerate() {
                let (px, py) = (x as f64 + 1.0 - c, y as f64 + 1.0 - c);
                *v = (bg.offset + bg.slope_x * px + bg.slope_y * py + noise.sample(&mut rng)) as f32;
            }
        }
        for &(ra, dec, flux) in &stars {
            let Some((sx, sy)) = tan.to_pixel(ra, dec) else { continue };
            add_star(&mut data, n, sx - 1.0, sy - 1.0, flux);
        }
        let path = dir.join(format!("img_{}_{}.fits", row, col));
        write_image(&path, n, &data, &tan).map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e))?;
        sky.images.push(path);
        sky.backgrounds.push(bg);
    }
    Ok(sky)
}

/// Adds a Gaussian star of total `flux` centred at 0-based pixel (`sx`, `sy`).
fn add_star(data: &mut [f32], n: usize, sx: f64, sy: f64, flux: f64) {
    let r = (5.0 * STAR_SIGMA).ceil();
    let peak = flux / (2.0 * std::f64::consts::PI * STAR_SIGMA * STAR_SIGMA);
    let lo = |v: f64| (v - r).max(0.0) as usize;
    let hi = |v: f64| ((v + r).min(n as f64 - 1.0)).max(-1.0);
    if sx + r < 0.0 || sy + r < 0.0 || sx - r > n as f64 - 1.0 || sy - r > n as f64 - 1.0 {
        return;
    }
    for y in lo(sy)..=hi(sy) as usize {
        for x in lo(sx)..=hi(sx) as usize {
            let d2 = (x as f64 - sx).powi(2) + (y as f64 - sy).powi(2);
            data[y * n + x] += (peak * (-d2 / (2.0 * STAR_SIGMA * STAR_SIGMA)).exp()) as f32;
        }
    }
}

/// Writes an `n`×`n` float32 image with a TAN WCS header.
fn write_image(path: &Path, n: usize, data: &[f32], tan: &Tan) -> Result<(), fitsio::errors::Error> {
    use fitsio::images::{ImageDescription, ImageType};
    let description = ImageDescription { data_type: ImageType::Float, dimensions: &[n, n] };
    let mut f = fitsio::FitsFile::create(path).with_custom_primary(&description).open()?;
    let hdu = f.primary_hdu()?;
    hdu.write_key(&mut f, "CTYPE1", "RA---TAN")?;
    hdu.write_key(&mut f, "CTYPE2", "DEC--TAN")?;
    hdu.write_key(&mut f, "CRVAL1", tan.ra0)?;
    hdu.write_key(&mut f, "CRVAL2", tan.dec0)?;
    hdu.write_key(&mut f, "CRPIX1", tan.crpix1)?;
    hdu.write_key(&mut f, "CRPIX2", tan.crpix2)?;
    hdu.write_key(&mut f, "CDELT1", -SCALE)?;
    hdu.write_key(&mut f, "CDELT2", SCALE)?;
    hdu.write_key(&mut f, "CROTA2", tan.rot)?;
    hdu.write_key(&mut f, "EQUINOX", 2000.0)?;
    hdu.write_key(&mut f, "BUNIT", "counts")?;
    hdu.write_image(&mut f, data)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tan_projection_round_trips() {
        let t = Tan { ra0: 150.0, dec0: 20.0, crpix1: 64.5, crpix2: 64.5, rot: 1.5 };
        for &(x, y) in &[(1.0, 1.0), (64.5, 64.5), (300.0, -40.0)] {
            let (ra, dec) = t.to_sky(x, y);
            let (x2, y2) = t.to_pixel(ra, dec).unwrap();
            assert!((x - x2).abs() < 1e-6 && (y - y2).abs() < 1e-6, "{} {} -> {} {}", x, y, x2, y2);
        }
        // Right ascension grows to the left (CDELT1 < 0), declination upwards.
        assert!(t.to_sky(10.0, 64.5).0 > t.to_sky(100.0, 64.5).0);
        assert!(t.to_sky(64.5, 10.0).1 < t.to_sky(64.5, 100.0).1);
    }

    #[test]
    fn offsets_span_the_range_and_images_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SkySpec {
            grid: 2,
            image_size: 32,
            overlap: 0.5,
            stars: 10,
            background_offset: 30.0,
            background_slope: 0.01,
            noise: 1.0,
            seed: 1,
        };
        let sky = write(&spec, dir.path()).unwrap();
        assert_eq!(sky.images.len(), 4);
        let mut o: Vec<f64> = sky.backgrounds.iter().map(|b| b.offset).collect();
        o.sort_by(f64::total_cmp);
        for (got, want) in o.iter().zip([-30.0, -10.0, 10.0, 30.0]) {
            assert!((got - want).abs() < 1e-9, "offsets {:?}", o);
        }
        let mut f = fitsio::FitsFile::open(&sky.images[0]).unwrap();
        let hdu = f.primary_hdu().unwrap();
        let data: Vec<f32> = hdu.read_image(&mut f).unwrap();
        assert_eq!(data.len(), 32 * 32);
        assert_eq!(hdu.read_key::<String>(&mut f, "CTYPE1").unwrap(), "RA---TAN");
    }
}
