//! `fedlearn`: federated learning of an MLP on (Fashion-)MNIST, as the Python suite's app (§5.4),
//! with its quirks fixed: clients get their training images from a Dirichlet split with the
//! given `alpha`, each round's `local_train` tasks receive the global weights and their client's
//! images and **return** their trained weights, which the driver averages weighted by sample
//! counts (FedAvg); a `test_model` task per round gives the test loss and accuracy. See
//! `apps/fedlearn/README.md`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::distr::Distribution;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::app::{App, AppConfig, AppPlugin};
use crate::engine::{Engine, as_completed};
use crate::options::Validate;
use crate::task::{Registry, Task, TaskError};
use crate::{app_info, opt_enum, task_arg};

pub mod idx;
pub mod model;

use idx::{Images, Split};
use model::Weights;

/// Where Debian's `dataset-fashion-mnist` installs Fashion-MNIST (gzipped IDX files).
pub const FMNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Classes of (Fashion-)MNIST.
const CLASSES: usize = 10;

opt_enum! {
    /// The dataset (the reference's names).
    pub enum Dataset {
        /// CIFAR-10: refused here (no CIFAR reader or CNN in taps).
        Cifar10 = "cifar10",
        /// CIFAR-100: refused here.
        Cifar100 = "cifar100",
        /// Fashion-MNIST (28×28 grey-scale clothes, 10 classes).
        Fmnist = "fmnist",
        /// MNIST (28×28 handwritten digits, 10 classes), from a directory of your own.
        Mnist = "mnist",
    }
}

crate::options! {
    /// Options of the `fedlearn` app.
    pub(crate) struct FedlearnOptions {
        /// Concentration of the Dirichlet distribution of client popularity (large = even split).
        alpha: f64 = 1e5,
        /// Dataset: fmnist or mnist (cifar10 and cifar100 are not supported).
        dataset: Dataset = Dataset::Fmnist,
        /// Directory of the dataset's IDX files (gzipped or not); none = /usr/share/datasets/fashion-mnist for fmnist.
        data_dir: Option<PathBuf> = None,
        /// Device to train on (only cpu).
        device: String = "cpu".into(),
        /// Number of simulated clients.
        clients: u64 = 8,
        /// Number of aggregation rounds.
        rounds: u64 = 3,
        /// Fraction of the clients that train in each round (0 < p <= 1).
        participation: f64 = 1.0,
        /// Epochs of local training per round.
        epochs: u64 = 3,
        /// Learning rate of the clients' SGD.
        lr: f64 = 1e-3,
        /// Batch size of local training.
        batch_size: u64 = 3,
        /// Train the clients (otherwise clients have no data and no_local_train tasks run).
        train: bool = true,
        /// Test the global model after every round.
        test: bool = true,
        /// Seed of the data split, client selection and initial weights (none = random).
        seed: Option<u64> = None,
        /// Taps-only: each client keeps at most this many of its training images (none = all).
        #[skip_default] client_samples: Option<u64> = None,
        /// Taps-only: test on the first this many test images (none = all).
        #[skip_default] test_samples: Option<u64> = None,
    }
}

impl FedlearnOptions {
    /// The directory the IDX files are read from.
    fn data_dir(&self) -> Result<PathBuf, String> {
        match (&self.data_dir, self.dataset) {
            (Some(d), _) => Ok(d.clone()),
            (None, Dataset::Fmnist) => Ok(PathBuf::from(FMNIST_DIR)),
            (None, d) => Err(format!(
                "app.dataset {} needs app.data_dir, a directory of its IDX files (train-images-idx3-ubyte.gz, …): \
                 set it with --app.data-dir DIR (taps never downloads data; Debian ships only fmnist)",
                d
            )),
        }
    }

    /// The splits the run reads.
    fn splits(&self) -> Vec<Split> {
        [(self.train, Split::Train), (self.test, Split::Test)].into_iter().filter(|p| p.0).map(|p| p.1).collect()
    }

    /// Clients that train in each round: `int(max(1, clients × participation))`, as the reference.
    fn selected(&self) -> usize {
        ((self.clients as f64 * self.participation).max(1.0) as usize).min(self.clients as usize)
    }
}

impl Validate for FedlearnOptions {
    fn validate(&self) -> Result<(), String> {
        if let Dataset::Cifar10 | Dataset::Cifar100 = self.dataset {
            return Err(format!(
                "app.dataset {} is not supported by taps (no CIFAR reader or CNN): use fmnist or mnist",
                self.dataset
            ));
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(format!("app.alpha must be greater than 0 (a finite number), got {}", self.alpha));
        }
        if !self.device.eq_ignore_ascii_case("cpu") {
            return Err(format!("app.device must be cpu (taps trains on the CPU with candle), got {:?}", self.device));
        }
        if self.clients == 0 {
            return Err("app.clients must be at least 1, got 0".into());
        }
        if !(self.participation > 0.0 && self.participation <= 1.0) {
            return Err(format!("app.participation must be in (0, 1], got {}", self.participation));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("app.lr must be a positive number, got {}", self.lr));
        }
        if self.batch_size == 0 {
            return Err("app.batch_size must be at least 1, got 0".into());
        }
        for (name, v) in [("client_samples", self.client_samples), ("test_samples", self.test_samples)] {
            if v == Some(0) {
                return Err(format!("app.{} must be at least 1 (or none for all), got 0", name));
            }
        }
        Ok(())
    }
}

/// The plugin entry.
pub const PLUGIN: AppPlugin = AppPlugin {
    plugin: crate::plugin!(
        dyn AppConfig,
        FedlearnOptions,
        "fedlearn",
        "federated learning of an MLP on Fashion-MNIST/MNIST (local_train and test_model tasks, FedAvg)"
    ),
    register_tasks,
};

fn register_tasks(r: &mut Registry) {
    r.add::<LocalTrain>().add::<NoLocalTrain>().add::<TestModel>();
}

task_arg!(Weights, Images);

/// What a client's local training returns: its trained weights and how many images it trained on.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LocalUpdate {
    /// The client's index.
    pub client: u64,
    /// The weights after local training.
    pub weights: Weights,
    /// Training images of the client (FedAvg's weight).
    pub samples: u64,
    /// Mean training loss over the last epoch's batches (NaN without data).
    pub train_loss: f64,
}

/// `local_train(weights, images, client, round, epochs, batch_size, lr)`: SGD on the client's
/// images from the global weights; returns the trained weights and the sample count.
pub(crate) struct LocalTrain;

impl Task for LocalTrain {
    const NAME: &'static str = "local_train";
    type Args = (Weights, Images, u64, u64, u64, u64, f64);
    type Output = LocalUpdate;
    fn run((weights, images, client, _round, epochs, batch_size, lr): Self::Args) -> Result<LocalUpdate, TaskError> {
        let (weights, stats) = model::train(&weights, &images, epochs, batch_size as usize, lr)
            .map_err(|e| TaskError::exception("TrainingError", e))?;
        Ok(LocalUpdate { client, weights, samples: images.len() as u64, train_loss: stats.last_epoch_loss })
    }
}

/// `no_local_train(client, round)`: the reference's stand-in when `train` is off; does nothing.
pub(crate) struct NoLocalTrain;

impl Task for NoLocalTrain {
    const NAME: &'static str = "no_local_train";
    type Args = (u64, u64);
    type Output = ();
    fn run(_: Self::Args) -> Result<(), TaskError> {
        Ok(())
    }
}

/// What testing the global model gives.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct TestResult {
    /// Mean cross-entropy over the test images.
    pub test_loss: f64,
    /// Fraction of test images classified correctly.
    pub test_accuracy: f64,
}

/// `test_model(weights, images, round)`: mean cross-entropy and accuracy on the test images.
pub(crate) struct TestModel;

impl Task for TestModel {
    const NAME: &'static str = "test_model";
    type Args = (Weights, Images, u64);
    type Output = TestResult;
    fn run((weights, images, _round): Self::Args) -> Result<TestResult, TaskError> {
        let (test_loss, test_accuracy) =
            model::evaluate(&weights, &images).map_err(|e| TaskError::exception("TestError", e))?;
        Ok(TestResult { test_loss, test_accuracy })
    }
}

/// Client popularity drawn from Dirichlet(\[alpha\] × n): Gamma(alpha) variates, normalised. Each is
/// drawn in log space (Gamma(α+1)·U^(1/α) ~ Gamma(α)), so that tiny alphas do not underflow to 0.
pub fn dirichlet(alpha: f64, n: usize, rng: &mut impl Rng) -> Vec<f64> {
    let gamma = rand_distr::Gamma::new(alpha + 1.0, 1.0).expect("alpha > 0");
    let logs: Vec<f64> =
        (0..n).map(|_| gamma.sample(rng).ln() + rng.random::<f64>().max(f64::MIN_POSITIVE).ln() / alpha).collect();
    let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logs.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = w.iter().sum();
    w.iter().map(|x| x / sum).collect()
}

/// The indices of `samples` training samples of each of `clients` clients: popularity from
/// Dirichlet(\[alpha\] × clients), then one weighted draw per sample, as the reference; each
/// client keeps at most `cap` of its samples (the first, in dataset order).
pub fn split(samples: usize, clients: usize, alpha: f64, cap: Option<usize>, rng: &mut impl Rng) -> Vec<Vec<usize>> {
    let popularity = dirichlet(alpha, clients, rng);
    let pick = rand::distr::weighted::WeightedIndex::new(&popularity).expect("positive weights");
    let mut out = vec![Vec::new(); clients];
    for i in 0..samples {
        out[pick.sample(rng)].push(i);
    }
    if let Some(cap) = cap {
        out.iter_mut().for_each(|c| c.truncate(cap));
    }
    out
}

/// One row of `rounds.csv`.
#[derive(Clone, Copy, Debug)]
struct Round {
    round: u64,
    test: Option<TestResult>,
    /// Seconds since the start of the run when the round ended.
    time: f64,
}

/// The fedlearn workflow.
pub(crate) struct FedlearnApp {
    opts: FedlearnOptions,
    seed: u64,
    train: Option<Images>,
    test: Option<Images>,
    rounds: Vec<Round>,
}

impl AppConfig for FedlearnOptions {
    fn get_app(&self, _: &Path) -> anyhow::Result<Box<dyn App>> {
        let dir = self.data_dir().map_err(anyhow::Error::msg)?;
        let load = |on: bool, split| on.then(|| idx::load(&dir, split)).transpose().map_err(anyhow::Error::msg);
        let (train, mut test) = (load(self.train, Split::Train)?, load(self.test, Split::Test)?);
        if let (Some(t), Some(n)) = (&mut test, self.test_samples) {
            *t = t.head(n as usize);
        }
        if let (Some(a), Some(b)) = (&train, &test) {
            anyhow::ensure!(
                (a.rows, a.cols) == (b.rows, b.cols),
                "the training images are {}x{} but the test images {}x{}",
                a.rows,
                a.cols,
                b.rows,
                b.cols
            );
        }
        let seed = self.seed.unwrap_or_else(|| rand::rng().random());
        Ok(Box::new(FedlearnApp { opts: self.clone(), seed, train, test, rounds: Vec::new() }))
    }

    /// The data files exist and their headers and lengths agree (nothing is downloaded).
    fn preflight(&self) -> Result<(), String> {
        let dir = self.data_dir()?;
        if !dir.is_dir() {
            let hint = if self.data_dir.is_none() { " (apt-get install dataset-fashion-mnist)" } else { "" };
            return Err(format!("app.data_dir {} is not a directory{}", dir.display(), hint));
        }
        self.splits().into_iter().try_for_each(|s| idx::check(&dir, s).map(|_| ()))
    }
}

impl FedlearnApp {
    /// Pixels per image of the data the run has (784 when it has none).
    fn pixels(&self) -> usize {
        self.train.as_ref().or(self.test.as_ref()).map_or(784, Images::pixels_per_image)
    }
}

impl App for FedlearnApp {
    fn run(&mut self, engine: &Engine, _run_dir: &Path) -> anyhow::Result<()> {
        let o = self.opts.clone();
        let start = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut weights = Weights::init(model::dims(self.pixels(), CLASSES), self.seed);
        tracing::debug!(
            "seed {}; model layers {:?}: {} parameters, {} bytes",
            self.seed,
            weights.dims,
            weights.len(),
            weights.data.len()
        );
        let n = o.clients as usize;
        let clients: Vec<Option<Images>> = match &self.train {
            Some(train) => {
                let cap = o.client_samples.map(|c| c as usize);
                split(train.len(), n, o.alpha, cap, &mut rng).iter().map(|ix| Some(train.select(ix))).collect()
            }
            None => vec![None; n],
        };
        app_info!("Created {} clients", n);
        tracing::debug!(
            "client sample counts: {:?}",
            clients.iter().map(|c| c.as_ref().map_or(0, Images::len)).collect::<Vec<_>>()
        );
        for r in 0..o.rounds {
            let p = format!("({}/{})", r + 1, o.rounds);
            app_info!("{} Starting local training for this round", p);
            let selected = rand::seq::index::sample(&mut rng, n, o.selected()).into_vec();
            if o.train {
                let futures: Vec<_> = selected
                    .iter()
                    .map(|&c| {
                        let images = clients[c].clone().expect("clients have data when training");
                        engine.submit::<LocalTrain>((
                            weights.clone().into(),
                            images.into(),
                            (c as u64).into(),
                            r.into(),
                            o.epochs.into(),
                            o.batch_size.into(),
                            o.lr.into(),
                        ))
                    })
                    .collect();
                let mut updates = Vec::new();
                for f in as_completed(futures, None) {
                    let f = f.map_err(|_| anyhow::anyhow!("waiting for local training timed out"))?;
                    updates.push(
                        f.result().map_err(|e| anyhow::anyhow!("local training in round {} failed: {}", r + 1, e))?,
                    );
                }
                app_info!("{} Finished local training", p);
                // In the order the clients were selected, so the sum is the same whatever order they finish in.
                updates.sort_by_key(|u| selected.iter().position(|&c| c as u64 == u.client));
                let models: Vec<(&Weights, u64)> = updates.iter().map(|u| (&u.weights, u.samples)).collect();
                match Weights::average(&models).map_err(anyhow::Error::msg)? {
                    Some(w) => weights = w,
                    None => {
                        tracing::warn!("{} the selected clients have no training images: the model is unchanged", p)
                    }
                }
                app_info!("{} Averaged the returned locally trained models", p);
            } else {
                let futures: Vec<_> =
                    selected.iter().map(|&c| engine.submit::<NoLocalTrain>(((c as u64).into(), r.into()))).collect();
                for f in futures {
                    f.result().map_err(|e| anyhow::anyhow!("no_local_train in round {} failed: {}", r + 1, e))?;
                }
                app_info!("{} Finished local training", p);
                app_info!("{} Averaged the returned locally trained models", p);
            }
            let mut test = None;
            if let Some(images) = &self.test {
                app_info!("{} Starting the test for the global model", p);
                let f = engine.submit::<TestModel>((weights.clone().into(), images.clone().into(), r.into()));
                let t = f.result().map_err(|e| anyhow::anyhow!("test_model in round {} failed: {}", r + 1, e))?;
                app_info!(
                    "{} Finished testing with test_loss={:.3} test_accuracy={:.4}",
                    p,
                    t.test_loss,
                    t.test_accuracy
                );
                test = Some(t);
            }
            self.rounds.push(Round { round: r + 1, test, time: start.elapsed().as_secs_f64() });
        }
        Ok(())
    }

    fn save(&mut self, run_dir: &Path) -> anyhow::Result<()> {
        let csv = run_dir.join("rounds.csv");
        let cell = |v: Option<f64>| v.map_or(String::new(), |v| format!("{}", v));
        let mut text = String::from("round,test_loss,test_accuracy,time\n");
        for r in &self.rounds {
            text += &format!(
                "{},{},{},{:.3}\n",
                r.round,
                cell(r.test.map(|t| t.test_loss)),
                cell(r.test.map(|t| t.test_accuracy)),
                r.time
            );
        }
        std::fs::write(&csv, text).map_err(|e| anyhow::anyhow!("cannot write {}: {}", csv.display(), e))?;
        if self.test.is_some() {
            let png = run_dir.join("rounds.png");
            let series = |f: fn(&TestResult) -> f64| -> Vec<(f64, f64)> {
                self.rounds.iter().filter_map(|r| r.test.as_ref().map(|t| (r.round as f64, f(t)))).collect()
            };
            let (acc, loss) = (series(|t| t.test_accuracy), series(|t| t.test_loss));
            crate::plot::line_panels(
                &png,
                &format!("fedlearn: {} clients, {}", self.opts.clients, self.opts.dataset),
                "Round",
                &[("Test accuracy", &acc[..]), ("Test loss", &loss[..])],
            )?;
        }
        app_info!("Wrote {} ({} rounds)", csv.display(), self.rounds.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_alpha_splits_evenly_and_a_small_one_does_not() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let even = split(40_000, 4, 1e5, None, &mut rng);
        assert_eq!(even.iter().map(Vec::len).sum::<usize>(), 40_000);
        assert!(
            even.iter().all(|c| (9_500..=10_500).contains(&c.len())),
            "{:?}",
            even.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let skewed = split(40_000, 4, 0.05, None, &mut rng);
        let max = skewed.iter().map(Vec::len).max().unwrap();
        assert!(
            max > 20_000,
            "alpha 0.05 should give one client most samples: {:?}",
            skewed.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let capped = split(40_000, 4, 1e5, Some(1000), &mut rng);
        assert!(capped.iter().all(|c| c.len() == 1000 && c.windows(2).all(|w| w[0] < w[1])));
        let p = dirichlet(1e-3, 5, &mut rng);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12 && p.iter().all(|x| x.is_finite()), "{:?}", p);
    }
}
