#!/bin/bash
#SBATCH --job-name=taps-synthetic
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --time=01:00:00
#SBATCH --chdir=/scratch/alice/runs/run-1
#SBATCH --output=/scratch/alice/runs/run-1/job.out
#SBATCH --error=/scratch/alice/runs/run-1/job.err

# Written by `taps submit`: app synthetic, executor thread-pool, 1 node(s) x 1.
# The run directory holds config.toml, this script, job.json, and the job's stdout/stderr.
cd /scratch/alice/runs/run-1 || exit 1
echo "taps job ${SLURM_JOB_ID:-?} on $(hostname) at $(date '+%Y-%m-%d %H:%M:%S'): synthetic on thread-pool"
# One driver process on the first node of the allocation.
/opt/taps/bin/taps run -c /scratch/alice/runs/run-1/config.toml --run-dir /scratch/alice/runs/run-1
status=$?
echo "$status" > /scratch/alice/runs/run-1/job.exit
exit "$status"
