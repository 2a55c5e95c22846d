//! How workers are started and jobs submitted (launch profiles, Slurm and PBS submitters).
pub mod profiles;
