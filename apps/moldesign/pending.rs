//! TEMPORARY stand-ins for the lead's `apps/chem.rs` and `crate::plot` until they land on main.

use serde::{Deserialize, Serialize};

/// 256-bit fingerprint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint(pub [u64; 4]);

/// Fingerprints of SMILES (hashed character trigrams; stand-in).
pub fn fingerprints(smiles: &[String]) -> Vec<Option<Fingerprint>> {
    smiles
        .iter()
        .map(|s| {
            let b = s.as_bytes();
            let mut f = [0u64; 4];
            for w in b.windows(3.min(b.len()).max(1)) {
                let mut h: u64 = 1469598103934665603;
                for &c in w {
                    h = (h ^ c as u64).wrapping_mul(1099511628211);
                }
                let bit = (h % 256) as usize;
                f[bit / 64] |= 1 << (bit % 64);
            }
            Some(Fingerprint(f))
        })
        .collect()
}

/// k-nearest neighbours, Jaccard distance, distance-weighted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Knn {
    fps: Vec<Fingerprint>,
    ys: Vec<f64>,
}

impl Knn {
    /// Fits.
    pub fn fit(fps: Vec<Fingerprint>, ys: Vec<f64>) -> Knn {
        Knn { fps, ys }
    }
    /// Predicts.
    pub fn predict(&self, q: &[Fingerprint]) -> Vec<f64> {
        q.iter()
            .map(|x| {
                let mut d: Vec<(f64, f64)> = self
                    .fps
                    .iter()
                    .zip(&self.ys)
                    .map(|(f, &y)| {
                        let inter: u32 = (0..4).map(|i| (f.0[i] & x.0[i]).count_ones()).sum();
                        let uni: u32 = (0..4).map(|i| (f.0[i] | x.0[i]).count_ones()).sum();
                        (if uni == 0 { 0.0 } else { 1.0 - inter as f64 / uni as f64 }, y)
                    })
                    .collect();
                d.sort_by(|a, b| a.0.total_cmp(&b.0));
                d.truncate(4);
                if let Some(&(_, y)) = d.iter().find(|p| p.0 == 0.0) {
                    return y;
                }
                let w: f64 = d.iter().map(|p| 1.0 / p.0).sum();
                d.iter().map(|p| p.1 / p.0).sum::<f64>() / w
            })
            .collect()
    }
}

/// Which end of the y axis is better.
pub enum Better {
    /// Larger is better.
    Higher,
}

/// Stand-in for `crate::plot::best_against_time`: writes nothing.
pub fn best_against_time(
    _path: &std::path::Path,
    _title: &str,
    _x: &str,
    _y: &str,
    _points: &[(f64, f64)],
    _better: Better,
) -> Result<(), String> {
    Ok(())
}
