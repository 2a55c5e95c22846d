#!/bin/bash
#PBS -N taps-synthetic
#PBS -l select=1:ncpus=1:mpiprocs=1
#PBS -l walltime=01:00:00
#PBS -o /scratch/alice/runs/run-1/job.out
#PBS -e /scratch/alice/runs/run-1/job.err

# Written by `taps submit`: app synthetic, executor thread-pool, 1 node(s) x 1.
# The run directory holds config.toml, this script, job.json, and the job's stdout/stderr.
cd /scratch/alice/runs/run-1 || exit 1
echo "taps job ${PBS_JOBID:-${SLURM_JOB_ID:-?}} on $(hostname) at $(date '+%Y-%m-%d %H:%M:%S'): synthetic on thread-pool"
# One driver process on the first node of the allocation.
/opt/taps/bin/taps run -c /scratch/alice/runs/run-1/config.toml --run-dir /scratch/alice/runs/run-1
status=$?
echo "$status" > /scratch/alice/runs/run-1/job.exit
exit "$status"
