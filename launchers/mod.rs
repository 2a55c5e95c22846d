//! How workers are started and jobs submitted: launch profiles ([`profile`]: srun, mpirun,
//! mpiexec), `taps submit` ([`submit`]), `taps status` / `taps cancel` ([`job`]) and the two batch
//! schedulers they talk to ([`slurm`], [`pbs`]).

pub mod job;
pub mod pbs;
pub mod profile;
pub mod profiles;
pub mod slurm;
pub mod submit;
