//! How workers are started and jobs submitted: the one table of launch profiles ([`profiles`]:
//! mpirun, mpiexec, srun and the user's own), starting an MPI job from here with one ([`mpi`]),
//! batch jobs and their scripts ([`job`]), and the batch schedulers behind one trait
//! ([`scheduler`]: [`slurm`], [`pbs`]). `taps submit`, `taps status` and `taps cancel` are the
//! harness's (`src/submit.rs`).

pub mod job;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod pbs;
pub mod profiles;
pub mod scheduler;
pub mod slurm;

impl scheduler::SchedulerKind {
    /// The scheduler of this name.
    pub fn get(self) -> &'static dyn scheduler::Scheduler {
        match self {
            scheduler::SchedulerKind::Slurm => &slurm::Slurm,
            scheduler::SchedulerKind::Pbs => &pbs::Pbs,
        }
    }
}
