//! One simulation: balls dropped on the terrain's triangle mesh, in rapier3d (single precision,
//! single-threaded, so a given input gives bitwise the same output on every executor).
//!
//! Materials follow the reference's pybullet set-up and Bullet's rules for combining them:
//! the ball has lateral friction 0.2, rolling friction 0.05 and spinning friction 0.05, the
//! terrain Bullet's default friction 0.5 and no rolling friction, so a contact has friction
//! 0.2 × 0.5 and rolling (and spinning) friction 0.05 × 0.5 + 0 × 0.2. Rapier has no rolling
//! friction: after each step, as Bullet's solver does, each contact takes out of the ball's
//! angular velocity at most `coefficient × normal impulse` of angular momentum, about the
//! contact plane (rolling) and about the normal (spinning); see [`resist_rotation`]. Like a
//! pybullet multibody, bodies have linear and angular damping 0.04 1/s.

use std::time::Duration;

use rapier3d::pipeline::PhysicsWorld;
use rapier3d::prelude::*;
use serde::{Deserialize, Serialize};

use super::terrain::Terrain;

/// Lateral friction of the ball (the reference's `lateralFriction`).
pub const BALL_FRICTION: f32 = 0.2;
/// Rolling friction of the ball (the reference's `rollingFriction`), in metres.
pub const BALL_ROLLING_FRICTION: f32 = 0.05;
/// Spinning friction of the ball (the reference's `spinningFriction`), in metres.
pub const BALL_SPINNING_FRICTION: f32 = 0.05;
/// Friction of the terrain: Bullet's default, which the reference keeps.
pub const TERRAIN_FRICTION: f32 = 0.5;
/// Linear and angular damping of a ball, 1/s (pybullet's default for a multibody).
pub const DAMPING: f32 = 0.04;
/// Gravity along z, m/s².
pub const GRAVITY: f32 = -9.81;

/// A ball's state: where it is and how fast it moves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ball {
    /// Centre, metres.
    pub position: [f32; 3],
    /// Linear velocity, m/s.
    pub velocity: [f32; 3],
}

/// How to simulate (the reference's `sim_config`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Ball diameter, metres.
    pub ball_diameter: f64,
    /// Ball mass, kg.
    pub ball_mass: f64,
    /// Steps per simulated second.
    pub tick_rate: u64,
    /// Simulated seconds.
    pub total_time: u64,
    /// Sleep one tick (1 / tick_rate s) after each step, as a real-time simulation would.
    pub real_time: bool,
}

crate::task_arg!(SimConfig);

impl SimConfig {
    /// Steps to take: total_time × tick_rate.
    pub fn steps(&self) -> u64 {
        self.total_time.saturating_mul(self.tick_rate)
    }
}

/// Friction coefficients of one surface, combined pairwise as Bullet does.
#[derive(Clone, Copy, Debug)]
struct Material {
    friction: f32,
    rolling: f32,
    spinning: f32,
}

const BALL: Material =
    Material { friction: BALL_FRICTION, rolling: BALL_ROLLING_FRICTION, spinning: BALL_SPINNING_FRICTION };
const GROUND: Material = Material { friction: TERRAIN_FRICTION, rolling: 0.0, spinning: 0.0 };

impl Material {
    /// Bullet's combined rolling and spinning friction of a contact between `self` and `other`
    /// (`btManifoldResult::calculateCombinedRollingFriction` and its spinning twin).
    fn combined_with(self, other: Material) -> (f32, f32) {
        (
            self.rolling * other.friction + other.rolling * self.friction,
            self.spinning * other.friction + other.spinning * self.friction,
        )
    }
}

/// Drops `balls` on `terrain` and steps the world `sim.steps()` times at 1 / tick_rate s each;
/// returns every ball's final state, in order.
pub fn simulate(terrain: &Terrain, balls: &[Ball], sim: &SimConfig) -> Result<Vec<Ball>, String> {
    terrain.check()?;
    if sim.tick_rate == 0 || !(sim.ball_diameter > 0.0 && sim.ball_mass > 0.0) {
        return Err(format!(
            "bad simulation settings: tick_rate {} (at least 1), ball diameter {} and mass {} (positive)",
            sim.tick_rate, sim.ball_diameter, sim.ball_mass
        ));
    }
    let dt = 1.0 / sim.tick_rate as f64;
    let mut world = PhysicsWorld::new();
    world.gravity = Vector::new(0.0, 0.0, GRAVITY);
    world.integration_parameters.dt = dt as f32;

    let (vertices, triangles) = terrain.mesh();
    let ground = ColliderBuilder::trimesh_with_flags(
        vertices.into_iter().map(Vector::from).collect(),
        triangles,
        TriMeshFlags::FIX_INTERNAL_EDGES,
    )
    .map_err(|e| format!("terrain mesh: {}", e))?
    .friction(GROUND.friction)
    .friction_combine_rule(CoefficientCombineRule::Multiply);
    let ground = world.insert_collider(ground, None);

    let (radius, mass) = ((sim.ball_diameter / 2.0) as f32, sim.ball_mass as f32);
    // A solid sphere's moment of inertia, as rapier derives it from the collider.
    let inertia = 0.4 * mass * radius * radius;
    let handles: Vec<(RigidBodyHandle, ColliderHandle)> = balls
        .iter()
        .map(|b| {
            world.insert(
                RigidBodyBuilder::dynamic()
                    .translation(Vector::from(b.position))
                    .linvel(Vector::from(b.velocity))
                    .linear_damping(DAMPING)
                    .angular_damping(DAMPING)
                    .ccd_enabled(true),
                ColliderBuilder::ball(radius)
                    .mass(mass)
                    .friction(BALL.friction)
                    .friction_combine_rule(CoefficientCombineRule::Multiply),
            )
        })
        .collect();

    let tick = Duration::from_secs_f64(dt);
    for _ in 0..sim.steps() {
        world.step();
        for &(body, collider) in &handles {
            resist_rotation(&mut world, body, collider, ground, inertia);
        }
        if sim.real_time {
            std::thread::sleep(tick);
        }
    }
    Ok(handles
        .iter()
        .map(|&(body, _)| {
            let b = &world.bodies[body];
            Ball { position: b.translation().into(), velocity: b.linvel().into() }
        })
        .collect())
}

/// Bullet's rolling and spinning friction for one ball after a step: for each contact that
/// pushed it (normal impulse `J` along `n`), the angular velocity about the contact plane
/// loses at most `rolling × J / inertia` and the one about `n` at most `spinning × J / inertia`
/// (never more than it has, so friction stops a ball but never turns it back).
fn resist_rotation(
    world: &mut PhysicsWorld,
    body: RigidBodyHandle,
    collider: ColliderHandle,
    ground: ColliderHandle,
    inertia: f32,
) {
    if world.bodies[body].is_sleeping() {
        return;
    }
    let mut w = world.bodies[body].angvel();
    let before = w;
    for pair in world.narrow_phase.contact_pairs_with(collider) {
        let j = pair.total_impulse_magnitude();
        let dir = pair.total_impulse();
        if j.is_nan() || j <= 0.0 || dir.length_squared() == 0.0 {
            continue;
        }
        let other = if pair.collider1 == ground || pair.collider2 == ground { GROUND } else { BALL };
        let (rolling, spinning) = BALL.combined_with(other);
        let n = dir.normalize();
        let spin = n * w.dot(n);
        let roll = w - spin;
        w = reduce(roll, rolling * j / inertia) + reduce(spin, spinning * j / inertia);
    }
    if w != before {
        world.bodies[body].set_angvel(w, false);
    }
}

/// `v` shortened by `by` (to zero at most).
fn reduce(v: Vector, by: f32) -> Vector {
    let len = v.length();
    if len <= by { Vector::ZERO } else { v * ((len - by) / len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(total_time: u64) -> SimConfig {
        SimConfig { ball_diameter: 0.2, ball_mass: 0.05, tick_rate: 240, total_time, real_time: false }
    }

    /// A bowl `h = depth · r² / R²` over a `size × size` grid of `spacing` m, lowest in the middle.
    fn bowl(size: u32, spacing: f32, depth: f32) -> Terrain {
        let c = (size - 1) as f32 * spacing / 2.0;
        let mut heights = Vec::new();
        for i in 0..size {
            for j in 0..size {
                let (x, y) = (j as f32 * spacing - c, i as f32 * spacing - c);
                heights.push(depth * (x * x + y * y) / (c * c));
            }
        }
        Terrain { size, spacing, heights: heights.into() }
    }

    #[test]
    fn every_ball_ends_at_the_bottom_of_a_bowl() {
        // 8 m across, 3 m deep at the rim: the slope 0.375 m⁻¹ × r exceeds what friction holds
        // (0.1) beyond 0.27 m from the bottom.
        let t = bowl(81, 0.1, 3.0);
        let centre = 4.0;
        let starts = [
            ([1.5, 1.5], [0.0, 0.0]),
            ([6.0, 2.0], [-1.0, 0.5]),
            ([4.0, 7.0], [1.0, 0.0]),
            ([2.0, 5.0], [0.3, -0.8]),
            ([4.2, 3.9], [0.0, 0.0]),
        ];
        for (xy, v) in starts {
            let ball = Ball { position: [xy[0], xy[1], 4.0], velocity: [v[0], v[1], 0.0] };
            let end = simulate(&t, &[ball], &sim(20)).unwrap()[0];
            let [x, y, z] = end.position.map(f64::from);
            let off = ((x - centre).powi(2) + (y - centre).powi(2)).sqrt();
            assert!(off < 0.3, "from {:?}: ended {:.3} m from the bottom at {:?}", xy, off, end.position);
            let surface = t.surface_height(x, y).unwrap();
            assert!((z - surface - 0.1).abs() < 0.02, "not resting on the surface: z {} surface {}", z, surface);
            let speed = end.velocity.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!(speed < 0.01, "still moving at {} m/s", speed);
        }
    }

    #[test]
    fn rolling_friction_holds_a_ball_on_a_gentle_slope_and_not_on_a_steep_one() {
        // A plane z = s·x. A ball at rest stays if static friction holds it (s ≤ 0.2 × 0.5) and
        // rolling friction stops it turning (s ≤ combined rolling friction / radius = 0.025 / 0.1).
        let plane = |s: f32| {
            let size = 101;
            let heights: Vec<f32> = (0..size * size).map(|k| s * (k % size) as f32 * 0.1).collect();
            Terrain { size: size as u32, spacing: 0.1, heights: heights.into() }
        };
        let start =
            |s: f32| Ball { position: [5.0, 5.0, 5.0 * s + 0.1 * (1.0 + s * s).sqrt() + 0.001], velocity: [0.0; 3] };
        // Without rolling friction a ball rolls down a slope of 0.05 (rolling needs little
        // friction): what holds it is the rotation resistance.
        let gentle = simulate(&plane(0.05), &[start(0.05)], &sim(3)).unwrap()[0];
        assert!((gentle.position[0] - 5.0).abs() < 0.02, "held: {:?}", gentle);
        assert!(gentle.velocity.iter().all(|v| v.abs() < 0.01), "{:?}", gentle);
        let steep = simulate(&plane(0.4), &[start(0.4)], &sim(1)).unwrap()[0];
        assert!(steep.position[0] < 4.5, "rolls down: {:?}", steep);
    }

    #[test]
    fn same_input_same_bits_and_real_time_paces_the_steps() {
        let t = bowl(41, 0.1, 0.5);
        let ball = Ball { position: [1.0, 1.2, 1.0], velocity: [0.7, -0.2, 0.0] };
        let a = simulate(&t, &[ball], &sim(2)).unwrap();
        let b = simulate(&t, &[ball], &sim(2)).unwrap();
        assert_eq!(format!("{:?}", a), format!("{:?}", b));
        let paced = SimConfig { tick_rate: 50, total_time: 1, real_time: true, ..sim(1) };
        let t0 = std::time::Instant::now();
        simulate(&t, &[ball], &paced).unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(50 * 20), "50 steps of 20 ms each: {:?}", t0.elapsed());
    }

    #[test]
    fn bad_settings_are_errors() {
        let t = bowl(3, 0.1, 0.5);
        let ball = Ball { position: [0.1, 0.1, 1.0], velocity: [0.0; 3] };
        assert!(simulate(&t, &[ball], &SimConfig { tick_rate: 0, ..sim(1) }).unwrap_err().contains("tick_rate"));
        let bad = Terrain { heights: vec![0.0; 8].into(), ..t };
        assert!(simulate(&bad, &[ball], &sim(1)).unwrap_err().contains("bad terrain"));
    }
}

/// Where a task's time goes on the default terrain (building the mesh, then 2,400 steps):
/// `cargo test --release --lib physics::simulate::speed -- --ignored --nocapture`. Not a test of speed.
#[cfg(test)]
mod speed {
    use super::*;
    use crate::apps::physics::terrain::TerrainSpec;

    #[test]
    #[ignore]
    fn mesh_and_steps() {
        let spec = TerrainSpec {
            width: 20,
            height: 3.0,
            resolution: 10,
            scale: 10.0,
            octaves: 3,
            persistence: 0.2,
            lacunarity: 2.0,
            filter_size: 2,
        };
        let t0 = std::time::Instant::now();
        let terrain = Terrain::generate(&spec, 3);
        let generate = t0.elapsed();
        let ball = Ball { position: [9.0, 9.0, 6.1], velocity: [1.0, -0.5, 0.0] };
        for total_time in [0, 10] {
            let sim = SimConfig { ball_diameter: 0.2, ball_mass: 0.05, tick_rate: 240, total_time, real_time: false };
            let t = std::time::Instant::now();
            simulate(&terrain, &[ball], &sim).unwrap();
            println!("terrain {:?}; simulate with {} steps: {:?}", generate, sim.steps(), t.elapsed());
        }
    }
}
