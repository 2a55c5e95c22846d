//! How workers are started and jobs submitted: launch profiles ([`profile`]: srun, mpirun,
//! mpiexec), the `taps submit` / `status` / `cancel` commands ([`submit`]) and the two batch
//! schedulers they talk to ([`slurm`], [`pbs`]).

pub mod pbs;
pub mod profile;
pub mod slurm;
pub mod submit;
