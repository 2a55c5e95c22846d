//! taps: benchmark task-execution frameworks on HPC systems with real scientific workloads.
//!
//! An app ([`apps`]) submits tasks ([`task`]) to an [`engine::Engine`], which resolves their
//! dependencies, moves their data through the data layer ([`data`]), runs them on an executor
//! ([`executor`]) and writes one record per task ([`record`]). [`run`] strings it together the
//! way `taps run` does; [`config`] reads the configuration.

// Without MPI, helpers that only the MPI executor and its launcher use are unused.
#![cfg_attr(not(feature = "mpi"), allow(dead_code))]
// The API documentation is the developers' (`cargo doc --document-private-items`, checked by
// scripts/test.sh): public items may link to private ones.
#![allow(rustdoc::private_intra_doc_links)]

pub mod app;
pub mod bench;
pub mod catalogue;
pub mod cli;
pub mod conditions;
pub mod config;
pub mod data;
pub mod engine;
pub mod environment;
pub mod executor;
pub mod floor;
pub mod limits;
pub mod logging;
#[cfg(feature = "mpi")]
pub mod mpi_job;
#[cfg(feature = "mpi")]
pub mod mpi_launch;
pub mod options;
pub mod plot;
pub mod plugins;
pub mod progress;
pub mod protocol;
pub mod record;
pub mod redis_store;
pub mod report;
pub mod run;
pub mod rundir;
pub mod shell;
pub mod shm;
pub mod spin;
pub mod submit;
pub mod sweep;
pub mod task;
pub mod worker;

#[path = "../apps/mod.rs"]
pub mod apps;
#[path = "../launchers/mod.rs"]
pub mod launchers;
