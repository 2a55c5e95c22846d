#!/bin/bash
#SBATCH --job-name=cholesky-scan
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --time=36:00:00
#SBATCH --partition=compute
#SBATCH --account=proj42
#SBATCH --qos=debug
#SBATCH --chdir=/scratch/alice/runs/run-1
#SBATCH --output=/scratch/alice/runs/run-1/job.out
#SBATCH --error=/scratch/alice/runs/run-1/job.err
#SBATCH --exclusive
#SBATCH --mem=0
#DW jobdw capacity=1GB access_mode=striped type=scratch

# Written by `taps submit`: app synthetic, executor thread-pool, 2 node(s) x 4.
# The run directory holds config.toml, this script, job.json, and the job's stdout/stderr.
cd /scratch/alice/runs/run-1 || exit 1
echo "taps job ${SLURM_JOB_ID:-?} on $(hostname) at $(date '+%Y-%m-%d %H:%M:%S'): synthetic on thread-pool"
module load openmpi/4.1 || exit 1
module load PrgEnv-gnu cray-hdf5 || exit 1
export OMP_NUM_THREADS=1
ulimit -n 4096
# One driver process on the first node of the allocation.
/opt/taps/bin/taps run -c /scratch/alice/runs/run-1/config.toml --run-dir /scratch/alice/runs/run-1
status=$?
echo "$status" > /scratch/alice/runs/run-1/job.exit
exit "$status"
