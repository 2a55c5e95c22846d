//! Chemistry shared by the docking and moldesign apps: Open Babel in batch (canonical SMILES,
//! Morgan fingerprints) and the surrogate model of the Python suite (a distance-weighted
//! 4-nearest-neighbour regressor with the Jaccard metric over 256-bit Morgan fingerprints of
//! radius 4).
//!
//! Open Babel's `ECFP8` is the extended-connectivity (Morgan) fingerprint of diameter 8, i.e.
//! radius 4, hashed into 4,096 bits; [`fingerprints`] folds it to [`FP_BITS`] bits (bit i goes
//! to i mod 256), as RDKit's `fpSize=256` folds its Morgan hashes. One `obabel` process handles
//! a whole batch (10,000 molecules take about 3 s on this machine).

use std::io::Write;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// The environment every Open Babel run gets: its force fields use OpenMP, and with one thread
/// per core on a busy node the threads spin (an embedding of a 5-atom molecule took 52 s instead
/// of 0.35 s; salicylic acid 2-6 s of CPU instead of 0.12 s). The executor provides the
/// parallelism.
pub const OBABEL_ENV: [(&str, &str); 1] = [("OMP_NUM_THREADS", "1")];

/// `obabel` as a task's program, with [`OBABEL_ENV`].
pub fn obabel_task() -> crate::app::TaskCommand {
    OBABEL_ENV.iter().fold(crate::app::TaskCommand::new("obabel"), |c, (k, v)| c.env(k, v))
}

/// Bits of a [`Fingerprint`] (the Python suite's `fpSize`).
pub const FP_BITS: usize = 256;

/// The neighbours [`Knn`] averages (the Python suite's `n_neighbors`).
pub const NEIGHBOURS: usize = 4;

/// Open Babel failed as a whole (it could not start, or it died); a molecule it cannot read is
/// not an error but a `None` in the result.
#[derive(Debug, thiserror::Error)]
#[error("obabel {what}: {message}")]
pub struct ChemError {
    /// What obabel was asked to do.
    pub what: &'static str,
    /// Why it failed, with the last lines of its stderr.
    pub message: String,
}

/// A 256-bit molecular fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u64; FP_BITS / 64]);

impl Fingerprint {
    /// Bits set.
    pub fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    /// Jaccard distance, 1 − |a ∧ b| / |a ∨ b| (0 between two empty fingerprints, as scipy).
    pub fn jaccard(&self, other: &Fingerprint) -> f64 {
        let (mut and, mut or) = (0u32, 0u32);
        for (a, b) in self.0.iter().zip(&other.0) {
            and += (a & b).count_ones();
            or += (a | b).count_ones();
        }
        if or == 0 { 0.0 } else { 1.0 - and as f64 / or as f64 }
    }
}

/// Runs `obabel ARGS` on the SMILES (one per line, titled by index) and returns its stdout.
fn obabel(what: &'static str, smiles: &[impl AsRef<str>], args: &[&str]) -> Result<String, ChemError> {
    let fail = |message: String| ChemError { what, message };
    let mut input = String::with_capacity(smiles.len() * 32);
    for (i, s) in smiles.iter().enumerate() {
        // A SMILES never holds whitespace; anything after it would be read as the title.
        let s = s.as_ref().split_whitespace().next().unwrap_or("");
        input.push_str(if s.is_empty() { "[invalid]" } else { s });
        input.push_str(&format!(" {}\n", i));
    }
    let mut child = Command::new("obabel")
        .envs(OBABEL_ENV)
        .args(["-e", "-ismi"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => fail("not found on PATH: apt-get install openbabel".into()),
            _ => fail(format!("cannot start: {}", e)),
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let _ = writer.join();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(fail(format!("{}; stderr ends: {}", out.status, tail.join(" | "))));
    }
    String::from_utf8(out.stdout).map_err(|e| fail(format!("output is not UTF-8: {}", e)))
}

/// Open Babel's canonical SMILES of each molecule, `None` where it cannot read one.
pub fn canonical(smiles: &[impl AsRef<str>]) -> Result<Vec<Option<String>>, ChemError> {
    let out = obabel("canonical SMILES", smiles, &["-ocan"])?;
    let mut result = vec![None; smiles.len()];
    for line in out.lines() {
        let mut parts = line.split_whitespace();
        if let (Some(can), Some(i)) = (parts.next(), parts.next().and_then(|t| t.parse::<usize>().ok()))
            && let Some(slot) = result.get_mut(i)
        {
            *slot = Some(can.to_string());
        }
    }
    Ok(result)
}

/// The fingerprint of each molecule, `None` where Open Babel cannot read one.
pub fn fingerprints(smiles: &[impl AsRef<str>]) -> Result<Vec<Option<Fingerprint>>, ChemError> {
    if smiles.is_empty() {
        return Ok(Vec::new());
    }
    let out = obabel("fingerprints", smiles, &["-ofpt", "-xfECFP8", "-xh"])?;
    let mut result = vec![None; smiles.len()];
    let mut current: Option<(usize, [u64; FP_BITS / 64], usize)> = None;
    let mut finish = |cur: Option<(usize, [u64; FP_BITS / 64], usize)>| {
        if let Some((i, bits, _)) = cur
            && let Some(slot) = result.get_mut(i)
        {
            *slot = Some(Fingerprint(bits));
        }
    };
    for line in out.lines() {
        if let Some(head) = line.strip_prefix('>') {
            finish(current.take());
            current = head.split_whitespace().next().and_then(|t| t.parse().ok()).map(|i| (i, [0u64; FP_BITS / 64], 0));
        } else if let Some((_, bits, word)) = current.as_mut() {
            // Hex lines hold words of 8 hex digits; other lines are notes ("Possible
            // superstructure of 0").
            let words: Option<Vec<u32>> = line
                .split_whitespace()
                .map(|h| if h.len() == 8 { u32::from_str_radix(h, 16).ok() } else { None })
                .collect();
            for w in words.unwrap_or_default() {
                for b in 0..32 {
                    if w >> b & 1 == 1 {
                        let bit = (*word * 32 + b) % FP_BITS;
                        bits[bit / 64] |= 1 << (bit % 64);
                    }
                }
                *word += 1;
            }
        }
    }
    finish(current);
    Ok(result)
}

/// The Python suite's surrogate: `KNeighborsRegressor(n_neighbors=4, weights='distance',
/// metric='jaccard')` over fingerprints. Serialisable, so a trained model can be a task's result.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Knn {
    fps: Vec<Fingerprint>,
    ys: Vec<f64>,
}

impl Knn {
    /// A model of the training pairs (fingerprint, value).
    pub fn fit(fps: Vec<Fingerprint>, ys: Vec<f64>) -> Knn {
        assert_eq!(fps.len(), ys.len(), "one value per fingerprint");
        Knn { fps, ys }
    }

    /// Training examples.
    pub fn len(&self) -> usize {
        self.fps.len()
    }

    /// Whether it has no training examples.
    pub fn is_empty(&self) -> bool {
        self.fps.is_empty()
    }

    /// The prediction for one fingerprint: the mean of the [`NEIGHBOURS`] nearest values weighted
    /// by 1/distance; where some neighbours are at distance 0, the plain mean of those (as
    /// scikit-learn). NaN for a model with no examples.
    pub fn predict_one(&self, fp: &Fingerprint) -> f64 {
        let mut near: Vec<(f64, usize)> = self.fps.iter().enumerate().map(|(i, f)| (fp.jaccard(f), i)).collect();
        let k = NEIGHBOURS.min(near.len());
        if k == 0 {
            return f64::NAN;
        }
        near.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let near = &near[..k];
        let exact: Vec<f64> = near.iter().filter(|(d, _)| *d == 0.0).map(|&(_, i)| self.ys[i]).collect();
        if !exact.is_empty() {
            return exact.iter().sum::<f64>() / exact.len() as f64;
        }
        let (num, den) = near.iter().fold((0.0, 0.0), |(n, d), &(dist, i)| (n + self.ys[i] / dist, d + 1.0 / dist));
        num / den
    }

    /// Predictions for many fingerprints (in parallel).
    pub fn predict(&self, fps: &[Fingerprint]) -> Vec<f64> {
        use rayon::prelude::*;
        fps.par_iter().map(|f| self.predict_one(f)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(bits: &[usize]) -> Fingerprint {
        let mut w = [0u64; FP_BITS / 64];
        for &b in bits {
            w[b / 64] |= 1 << (b % 64);
        }
        Fingerprint(w)
    }

    #[test]
    fn jaccard_distance_is_one_minus_shared_over_union() {
        assert_eq!(fp(&[1, 2, 3]).jaccard(&fp(&[2, 3, 4])), 1.0 - 2.0 / 4.0);
        assert_eq!(fp(&[]).jaccard(&fp(&[])), 0.0);
        assert_eq!(fp(&[7]).jaccard(&fp(&[200])), 1.0);
    }

    #[test]
    fn knn_weights_the_four_nearest_by_inverse_distance_and_exact_matches_win() {
        let train = vec![fp(&[1, 2, 3, 4]), fp(&[1, 2, 3, 5]), fp(&[1, 2, 6, 7]), fp(&[8, 9]), fp(&[1, 2, 3, 4, 5, 6])];
        let ys = vec![1.0, 2.0, 3.0, 100.0, 4.0];
        let m = Knn::fit(train, ys);
        let q = fp(&[1, 2, 3, 4, 5]);
        // distances: 1/5, 1/5, 4/7, 1, 1/6 -> the four nearest exclude [8, 9].
        let ds = [0.2, 0.2, 1.0 - 2.0 / 7.0, 1.0 - 5.0 / 6.0];
        let vs = [1.0, 2.0, 3.0, 4.0];
        let want = ds.iter().zip(vs).map(|(d, v)| v / d).sum::<f64>() / ds.iter().map(|d| 1.0 / d).sum::<f64>();
        assert!((m.predict_one(&q) - want).abs() < 1e-12, "{} vs {}", m.predict_one(&q), want);
        assert_eq!(m.predict_one(&fp(&[1, 2, 3, 5])), 2.0, "an exact match is its own value");
        assert!(Knn::default().predict_one(&q).is_nan());
    }

    #[test]
    fn open_babel_canonicalises_and_fingerprints_in_one_batch_and_marks_what_it_cannot_read() {
        let smiles = ["c1ccccc1O", "not(a(smiles", "C1=CC=CC=C1O", "CCO", ""];
        let can = canonical(&smiles).unwrap();
        assert_eq!(can[0].as_deref(), Some("Oc1ccccc1"));
        assert_eq!(can[1], None);
        assert_eq!(can[2], can[0], "two spellings of phenol have one canonical form");
        assert_eq!(can[3].as_deref(), Some("CCO"));
        assert_eq!(can[4], None);
        let fps = fingerprints(&smiles).unwrap();
        let (phenol, ethanol) = (fps[0].unwrap(), fps[3].unwrap());
        assert!(fps[1].is_none() && fps[4].is_none());
        assert_eq!(fps[2], fps[0], "the same molecule has the same fingerprint");
        assert!(phenol.count() > ethanol.count() && ethanol.count() > 0);
        assert!(phenol.jaccard(&ethanol) > 0.5, "phenol and ethanol share little");
        let aniline = fingerprints(&["c1ccccc1N"]).unwrap()[0].unwrap();
        assert!(phenol.jaccard(&aniline) < phenol.jaccard(&ethanol), "phenol is nearer aniline than ethanol");
    }
}
