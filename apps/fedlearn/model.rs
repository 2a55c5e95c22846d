//! The Python suite's MLP for (Fashion-)MNIST (flatten 784 → 3136 → 784 → 196 → 10, ReLU), trained
//! with plain SGD and cross-entropy on the CPU with candle; its weights as one byte string, the
//! payload the tasks exchange.

use bytes::Bytes;
use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{Optimizer, SGD};
use rand::{Rng, SeedableRng};

use super::idx::Images;

/// Hidden layer widths for an input of `n` pixels: 4n, n and n/4, as the reference's
/// 3136, 784 and 196 for 28×28 images.
pub fn dims(pixels: usize, classes: usize) -> Vec<u32> {
    [pixels, 4 * pixels, pixels, pixels / 4, classes].iter().map(|&d| d as u32).collect()
}

/// An MLP's parameters: for each layer `dims[i] → dims[i+1]`, the weight matrix (out × in,
/// row-major) then the bias, as little-endian `f32`s in one byte string.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Weights {
    /// Layer widths, input first.
    pub dims: Vec<u32>,
    /// The parameters' bytes.
    pub data: Bytes,
}

fn layers(dims: &[u32]) -> impl Iterator<Item = (usize, usize)> + '_ {
    dims.windows(2).map(|w| (w[0] as usize, w[1] as usize))
}

impl Weights {
    /// PyTorch's default initialisation of `nn.Linear`: weights and biases uniform in
    /// ±1/√fan_in, drawn from a ChaCha8 stream seeded with `seed`.
    pub fn init(dims: Vec<u32>, seed: u64) -> Weights {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut v = Vec::new();
        for (i, o) in layers(&dims) {
            let k = 1.0 / (i as f32).sqrt();
            v.extend((0..o * i + o).map(|_| rng.random_range(-k..k)));
        }
        Weights::from_params(dims, &v)
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.data.len() / 4
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn from_params(dims: Vec<u32>, v: &[f32]) -> Weights {
        Weights { dims, data: v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into() }
    }

    /// The parameters as `f32`s.
    pub fn params(&self) -> Vec<f32> {
        self.data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()
    }

    /// Checks that the byte string holds exactly the parameters `dims` needs.
    fn check(&self) -> Result<(), String> {
        let want: usize = layers(&self.dims).map(|(i, o)| o * i + o).sum();
        if self.data.len() != want * 4 {
            return Err(format!(
                "weights of {} bytes for layers {:?}, expected {}",
                self.data.len(),
                self.dims,
                want * 4
            ));
        }
        Ok(())
    }

    /// FedAvg: the mean of `models` weighted by their sample counts (in f64, in the given order);
    /// None when the counts sum to 0.
    pub fn average(models: &[(&Weights, u64)]) -> Result<Option<Weights>, String> {
        let total: u64 = models.iter().map(|m| m.1).sum();
        let Some((first, _)) = models.first() else { return Ok(None) };
        if total == 0 {
            return Ok(None);
        }
        let mut sum = vec![0f64; first.len()];
        for (w, n) in models {
            w.check()?;
            if w.dims != first.dims {
                return Err(format!("models of layers {:?} and {:?} cannot be averaged", first.dims, w.dims));
            }
            let f = *n as f64 / total as f64;
            for (s, x) in sum.iter_mut().zip(w.params()) {
                *s += f * x as f64;
            }
        }
        let mean: Vec<f32> = sum.iter().map(|&x| x as f32).collect();
        Ok(Some(Weights::from_params(first.dims.clone(), &mean)))
    }
}

/// The network, its parameters as trainable candle variables.
struct Mlp {
    /// (weight, bias) of each layer.
    layers: Vec<(Var, Var)>,
}

impl Mlp {
    fn new(w: &Weights) -> candle_core::Result<Mlp> {
        w.check().map_err(candle_core::Error::msg)?;
        let params = w.params();
        let mut at = 0;
        let mut take = |shape: &[usize]| {
            let n: usize = shape.iter().product();
            let t = Tensor::from_slice(&params[at..at + n], shape, &Device::Cpu).and_then(|t| Var::from_tensor(&t));
            at += n;
            t
        };
        let layers = layers(&w.dims)
            .map(|(i, o)| -> candle_core::Result<(Var, Var)> { Ok((take(&[o, i])?, take(&[o])?)) })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Mlp { layers })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let last = self.layers.len() - 1;
        let mut h = x.clone();
        for (k, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(&w.t()?)?.broadcast_add(b)?;
            if k < last {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    fn vars(&self) -> Vec<Var> {
        self.layers.iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect()
    }

    fn weights(&self, dims: Vec<u32>) -> candle_core::Result<Weights> {
        let mut v = Vec::new();
        for var in self.vars() {
            v.extend(var.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Weights::from_params(dims, &v))
    }
}

/// Images `lo..hi` as an (n × pixels) tensor in [0, 1] (torchvision's ToTensor) and their labels.
fn batch(data: &Images, lo: usize, hi: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let p = data.pixels_per_image();
    let x: Vec<f32> = data.pixels[lo * p..hi * p].iter().map(|&v| v as f32 / 255.0).collect();
    let y: Vec<u32> = data.labels[lo..hi].iter().map(|&l| l as u32).collect();
    Ok((Tensor::from_vec(x, (hi - lo, p), &Device::Cpu)?, Tensor::from_vec(y, hi - lo, &Device::Cpu)?))
}

/// What local training returns besides the weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainStats {
    /// Mean cross-entropy over the batches of the last epoch (NaN without data or epochs).
    pub last_epoch_loss: f64,
    /// Batches run in all.
    pub batches: u64,
}

/// Trains a copy of `w` on `data` for `epochs` epochs of SGD (learning rate `lr`), batches of
/// `batch_size` images in order (no shuffling, as the reference's DataLoader).
pub fn train(
    w: &Weights,
    data: &Images,
    epochs: u64,
    batch_size: usize,
    lr: f64,
) -> Result<(Weights, TrainStats), String> {
    let go = || -> candle_core::Result<(Weights, TrainStats)> {
        let mlp = Mlp::new(w)?;
        let mut opt = SGD::new(mlp.vars(), lr)?;
        let mut stats = TrainStats { last_epoch_loss: f64::NAN, batches: 0 };
        for _ in 0..epochs {
            let (mut sum, mut n) = (0f64, 0u64);
            for lo in (0..data.len()).step_by(batch_size.max(1)) {
                let (x, y) = batch(data, lo, (lo + batch_size).min(data.len()))?;
                let loss = candle_nn::loss::cross_entropy(&mlp.forward(&x)?, &y)?;
                opt.backward_step(&loss)?;
                sum += loss.to_scalar::<f32>()? as f64;
                n += 1;
            }
            stats.batches += n;
            stats.last_epoch_loss = if n > 0 { sum / n as f64 } else { f64::NAN };
        }
        Ok((mlp.weights(w.dims.clone())?, stats))
    };
    go().map_err(|e| e.to_string())
}

/// Mean cross-entropy and accuracy of `w` on `data` (evaluated 1,000 images at a time; the
/// reference's batches of one give the same mean).
pub fn evaluate(w: &Weights, data: &Images) -> Result<(f64, f64), String> {
    let go = || -> candle_core::Result<(f64, f64)> {
        let mlp = Mlp::new(w)?;
        let (mut loss, mut correct) = (0f64, 0u64);
        for lo in (0..data.len()).step_by(1000) {
            let hi = (lo + 1000).min(data.len());
            let (x, y) = batch(data, lo, hi)?;
            let logits = mlp.forward(&x)?;
            loss += candle_nn::loss::cross_entropy(&logits, &y)?.to_scalar::<f32>()? as f64 * (hi - lo) as f64;
            let hit = logits.argmax(D::Minus1)?.eq(&y)?.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()?;
            correct += hit as u64;
        }
        let n = data.len().max(1) as f64;
        Ok((loss / n, correct as f64 / n))
    };
    go().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_seeded_and_sized_as_the_reference_mlp() {
        let d = dims(784, 10);
        assert_eq!(d, vec![784, 3136, 784, 196, 10]);
        let w = Weights::init(d.clone(), 7);
        assert_eq!(w.len(), 784 * 3136 + 3136 + 3136 * 784 + 784 + 784 * 196 + 196 + 196 * 10 + 10);
        assert_eq!(w, Weights::init(d.clone(), 7));
        assert_ne!(w, Weights::init(d, 8));
        let p = w.params();
        let k = 1.0 / 784f32.sqrt();
        assert!(p[..784 * 3136].iter().all(|x| x.abs() <= k));
    }

    #[test]
    fn fedavg_weights_by_sample_counts() {
        let a = Weights::from_params(vec![1, 1], &[1.0, 2.0]);
        let b = Weights::from_params(vec![1, 1], &[4.0, 8.0]);
        let m = Weights::average(&[(&a, 1), (&b, 2)]).unwrap().unwrap();
        assert_eq!(m.params(), vec![3.0, 6.0]);
        assert_eq!(Weights::average(&[(&a, 0), (&b, 0)]).unwrap(), None);
        let c = Weights::from_params(vec![1, 2], &[1.0, 2.0, 3.0, 4.0]);
        assert!(Weights::average(&[(&a, 1), (&c, 1)]).unwrap_err().contains("cannot be averaged"));
    }

    #[test]
    fn training_lowers_the_loss_on_its_data() {
        // Two classes told apart by which half of a 4×4 image is lit.
        let pixels: Vec<u8> =
            (0..64).flat_map(|i| (0..16).map(move |p| if (p < 8) == (i % 2 == 0) { 255 } else { 0 })).collect();
        let labels: Vec<u8> = (0..64).map(|i| (i % 2) as u8).collect();
        let data = Images { rows: 4, cols: 4, pixels: pixels.into(), labels: labels.into() };
        let w = Weights::init(dims(16, 2), 1);
        let (before, _) = evaluate(&w, &data).unwrap();
        let (trained, stats) = train(&w, &data, 20, 8, 0.1).unwrap();
        assert_eq!(stats.batches, 20 * 8);
        let (after, acc) = evaluate(&trained, &data).unwrap();
        assert!(after < before / 2.0 && acc == 1.0, "loss {} -> {}, accuracy {}", before, after, acc);
    }
}
