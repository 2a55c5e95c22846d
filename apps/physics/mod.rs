//! `physics`: golf balls rolling on a random terrain. The driver makes the terrain (fractal
//! Perlin noise, smoothed) and the balls' starts; one `simulate` task per ball receives the
//! terrain and drops the ball on it in a rigid-body engine (rapier3d); the final positions are
//! drawn on the terrain's contour map and 3-D surface (the Python suite's `physics` app, which
//! uses pybullet).

pub mod plots;
pub mod simulate;
pub mod terrain;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::app::{App, AppConfig, AppPlugin, Footprint};
use crate::app_info;
use crate::engine::Engine;
use crate::options::Validate;
use crate::task::{Registry, Task, TaskError};

pub use simulate::{Ball, SimConfig};
pub use terrain::{Terrain, TerrainSpec};

crate::options! {
    /// Options of the `physics` app.
    pub(crate) struct PhysicsOptions {
        /// Number of balls, one simulate task each.
        simulations: u64,
        /// Ball diameter in metres.
        ball_diameter: f64 = 0.2,
        /// Ball mass in kilograms.
        ball_mass: f64 = 0.05,
        /// Simulation steps per simulated second.
        tick_rate: u64 = 240,
        /// Simulated seconds.
        total_time: u64 = 10,
        /// Pace the simulation in real time (sleep 1/tick-rate seconds after each step).
        real_time: bool = true,
        /// Seed of the terrain and of the balls' starts (none = a fresh seed each run, logged).
        seed: Option<u64> = None,
        /// Side of the square terrain in metres.
        terrain_width: u64 = 20,
        /// Height of the terrain's highest point above its lowest, in metres.
        terrain_height: f64 = 3.0,
        /// Grid points per metre.
        terrain_resolution: u64 = 10,
        /// Horizontal scale of the noise in metres (larger = smoother hills).
        terrain_scale: f64 = 10.0,
        /// Octaves of the Perlin noise.
        terrain_octaves: u32 = 3,
        /// Amplitude factor from one noise octave to the next.
        terrain_persistence: f64 = 0.2,
        /// Frequency factor from one noise octave to the next.
        terrain_lacunarity: f64 = 2.0,
        /// Sigma of the Gaussian smoothing, in grid points (0 = none).
        terrain_filter_size: u64 = 2,
    }
}

/// Most grid points per side of the terrain (the mesh's indices are 32-bit).
pub const MAX_TERRAIN_POINTS: u64 = 16_384;
/// Most octaves of the noise.
pub const MAX_OCTAVES: u32 = 32;

impl Validate for PhysicsOptions {
    fn validate(&self) -> Result<(), String> {
        if self.simulations == 0 {
            return Err("app.simulations must be at least 1".into());
        }
        positive("app.ball_diameter", self.ball_diameter, "metres")?;
        positive("app.ball_mass", self.ball_mass, "kilograms")?;
        if self.tick_rate == 0 {
            return Err("app.tick_rate must be at least 1 (steps per second)".into());
        }
        if self.terrain_width == 0 || self.terrain_resolution == 0 {
            return Err("app.terrain_width and app.terrain_resolution must be at least 1".into());
        }
        let d = self.spec().size();
        if !(2..=MAX_TERRAIN_POINTS).contains(&d) {
            return Err(format!(
                "app.terrain_width × app.terrain_resolution = {} grid points per side; allowed: 2 to {}",
                d, MAX_TERRAIN_POINTS
            ));
        }
        if !(self.terrain_height.is_finite() && self.terrain_height >= 0.0) {
            return Err(format!("app.terrain_height must be a finite number >= 0, got {}", self.terrain_height));
        }
        positive("app.terrain_scale", self.terrain_scale, "metres")?;
        if !(1..=MAX_OCTAVES).contains(&self.terrain_octaves) {
            return Err(format!("app.terrain_octaves must be from 1 to {}, got {}", MAX_OCTAVES, self.terrain_octaves));
        }
        if !(self.terrain_persistence.is_finite() && self.terrain_persistence >= 0.0) {
            return Err(format!(
                "app.terrain_persistence must be a finite number >= 0, got {}",
                self.terrain_persistence
            ));
        }
        positive("app.terrain_lacunarity", self.terrain_lacunarity, "a frequency factor")?;
        if self.terrain_filter_size > d {
            return Err(format!(
                "app.terrain_filter_size must be at most the terrain's {} grid points per side, got {}",
                d, self.terrain_filter_size
            ));
        }
        Ok(())
    }
}

/// `key` must be finite and > 0.
fn positive(key: &str, v: f64, unit: &str) -> Result<(), String> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(format!("{} must be a finite number > 0 ({}), got {}", key, unit, v))
    }
}

impl PhysicsOptions {
    /// The terrain options.
    pub fn spec(&self) -> TerrainSpec {
        TerrainSpec {
            width: self.terrain_width,
            height: self.terrain_height,
            resolution: self.terrain_resolution,
            scale: self.terrain_scale,
            octaves: self.terrain_octaves,
            persistence: self.terrain_persistence,
            lacunarity: self.terrain_lacunarity,
            filter_size: self.terrain_filter_size,
        }
    }

    /// The simulation options every task receives.
    pub fn sim(&self) -> SimConfig {
        SimConfig {
            ball_diameter: self.ball_diameter,
            ball_mass: self.ball_mass,
            tick_rate: self.tick_rate,
            total_time: self.total_time,
            real_time: self.real_time,
        }
    }
}

/// The plugin entry.
pub const PLUGIN: AppPlugin = AppPlugin {
    plugin: crate::plugin!(
        dyn AppConfig,
        PhysicsOptions,
        "physics",
        "golf balls rolling on a random terrain (rapier3d)"
    ),
    register_tasks,
};

fn register_tasks(r: &mut Registry) {
    r.add::<SimulateTask>();
}

impl AppConfig for PhysicsOptions {
    fn get_app(&self, _run_dir: &Path) -> anyhow::Result<Box<dyn App>> {
        Ok(Box::new(PhysicsApp { opts: self.clone(), result: None }))
    }

    /// The heightmap in double precision while it is made, twice (noise, then smoothed), and once
    /// in single precision.
    fn footprint(&self) -> Footprint {
        let d = self.spec().size();
        Footprint {
            memory_bytes: d.saturating_mul(d).saturating_mul(20),
            memory_for: format!(
                "app.terrain_width × app.terrain_resolution = a {} × {} heightmap",
                self.spec().size(),
                self.spec().size()
            ),
            files: Vec::new(),
        }
    }
}

/// The reference's `simulate(terrain, positions, sim_config)`: drops the balls on the terrain,
/// returns their final states in order.
pub struct SimulateTask;

impl Task for SimulateTask {
    const NAME: &'static str = "simulate";
    type Args = (Terrain, Vec<Ball>, SimConfig);
    type Output = Vec<Ball>;
    fn run((terrain, balls, sim): Self::Args) -> Result<Vec<Ball>, TaskError> {
        simulate::simulate(&terrain, &balls, &sim).map_err(|e| TaskError::exception("SimulationError", e))
    }
}

/// The balls' starts: `n` positions uniform in the middle 60 % of the terrain (each side), at
/// twice the terrain's height plus a radius, then `n` horizontal velocities uniform in
/// ±0.1 × width m/s (ChaCha8 from `seed`, so every executor gets the same starts).
pub fn initial_balls(n: u64, width: f64, height: f64, radius: f64, seed: u64) -> Vec<Ball> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let z = (2.0 * height + radius) as f32;
    let positions: Vec<[f32; 3]> = (0..n)
        .map(|_| {
            let x = rng.random_range(0.2 * width..=0.8 * width);
            let y = rng.random_range(0.2 * width..=0.8 * width);
            [x as f32, y as f32, z]
        })
        .collect();
    positions
        .into_iter()
        .map(|position| {
            let vx = rng.random_range(-0.1 * width..=0.1 * width);
            let vy = rng.random_range(-0.1 * width..=0.1 * width);
            Ball { position, velocity: [vx as f32, vy as f32, 0.0] }
        })
        .collect()
}

/// The physics workflow.
pub(crate) struct PhysicsApp {
    opts: PhysicsOptions,
    /// The terrain, the starts and the final states, until `save` writes them.
    result: Option<(Terrain, Vec<Ball>, Vec<Ball>)>,
}

impl App for PhysicsApp {
    fn run(&mut self, engine: &Engine, _run_dir: &Path) -> anyhow::Result<()> {
        let o = &self.opts;
        let seed = match o.seed {
            Some(s) => s,
            None => {
                // Below 2^63, so that it can be given back as app.seed (a TOML integer).
                let s = crate::app::fresh_seed();
                app_info!("No seed given (app.seed): using seed {}", s);
                s
            }
        };
        let terrain = Terrain::generate(&o.spec(), seed);
        let bytes = crate::task::encode(&terrain).map(|b| b.len()).unwrap_or(0);
        app_info!(
            "Generated terrain mesh ({} × {} points, {} m apart; {} bytes serialised)",
            terrain.size,
            terrain.size,
            terrain.spacing,
            bytes
        );
        let starts =
            initial_balls(o.simulations, o.terrain_width as f64, o.terrain_height, o.ball_diameter / 2.0, seed);
        app_info!("Generated {} initial position(s)", starts.len());

        app_info!("Submitting simulations...");
        let sim = o.sim();
        let futures: Vec<_> = starts
            .iter()
            .map(|b| engine.submit::<SimulateTask>((terrain.clone().into(), vec![*b].into(), sim.clone().into())))
            .collect();
        app_info!("Simulations submitted");
        let mut ends = Vec::with_capacity(futures.len());
        for f in &futures {
            let out = f.result()?;
            anyhow::ensure!(out.len() == 1, "a simulate task returned {} balls for 1", out.len());
            ends.extend(out);
        }
        app_info!("Received {} final position(s)", ends.len());
        self.result = Some((terrain, starts, ends));
        Ok(())
    }

    fn save(&mut self, run_dir: &Path) -> anyhow::Result<()> {
        let Some((terrain, starts, ends)) = self.result.take() else { return Ok(()) };
        write_terrain_csv(&run_dir.join("terrain.csv"), &terrain)?;
        write_positions_csv(&run_dir.join("positions.csv"), &starts, &ends)?;
        let images = run_dir.join("images");
        std::fs::create_dir_all(&images).map_err(|e| anyhow::anyhow!("cannot create {}: {}", images.display(), e))?;
        let xy = |b: &[Ball]| b.iter().map(|b| [b.position[0] as f64, b.position[1] as f64]).collect::<Vec<_>>();
        let (first, last) = (xy(&starts), xy(&ends));
        let contour = images.join("contour.png");
        plots::contour(&contour, &terrain, &first, &last)
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {}", contour.display(), e))?;
        app_info!("Saved contour map to {}", contour.display());
        let surface = images.join("terrain.png");
        plots::surface(&surface, &terrain, &first, &last)
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {}", surface.display(), e))?;
        app_info!("Saved terrain map to {}", surface.display());
        Ok(())
    }
}

/// Writes the heightmap as CSV: one line per grid row `i` (y = i / resolution), one height per
/// column `j` (x = j / resolution), in metres.
fn write_terrain_csv(path: &Path, t: &Terrain) -> anyhow::Result<()> {
    let write = || -> std::io::Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        for row in t.heights.chunks(t.size as usize) {
            let line: Vec<String> = row.iter().map(f32::to_string).collect();
            writeln!(out, "{}", line.join(","))?;
        }
        out.flush()
    };
    write().map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e))
}

/// Writes each ball's start and end (position in m, velocity in m/s) as CSV; numbers print
/// as the shortest text that reads back to the same `f32`.
fn write_positions_csv(path: &Path, starts: &[Ball], ends: &[Ball]) -> anyhow::Result<()> {
    let write = || -> std::io::Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        writeln!(out, "ball,start_x,start_y,start_z,start_vx,start_vy,end_x,end_y,end_z,end_vx,end_vy,end_vz")?;
        for (k, (s, e)) in starts.iter().zip(ends).enumerate() {
            let [x0, y0, z0] = s.position;
            let [vx0, vy0, _] = s.velocity;
            let [x, y, z] = e.position;
            let [vx, vy, vz] = e.velocity;
            writeln!(out, "{},{},{},{},{},{},{},{},{},{},{},{}", k, x0, y0, z0, vx0, vy0, x, y, z, vx, vy, vz)?;
        }
        out.flush()
    };
    write().map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_are_seeded_and_inside_the_middle_of_the_terrain() {
        let a = initial_balls(50, 20.0, 3.0, 0.1, 9);
        assert_eq!(a, initial_balls(50, 20.0, 3.0, 0.1, 9));
        assert_ne!(a, initial_balls(50, 20.0, 3.0, 0.1, 10));
        for b in &a {
            assert!(b.position[..2].iter().all(|&v| (4.0..=16.0).contains(&v)), "{:?}", b);
            assert_eq!(b.position[2], 6.1);
            assert!(b.velocity[..2].iter().all(|&v| (-2.0..=2.0).contains(&v)) && b.velocity[2] == 0.0, "{:?}", b);
        }
        // The first n positions do not depend on n (velocities are drawn after them).
        assert_eq!(
            initial_balls(3, 20.0, 3.0, 0.1, 9)[..2].iter().map(|b| b.position).collect::<Vec<_>>(),
            a[..2].iter().map(|b| b.position).collect::<Vec<_>>()
        );
    }
}
