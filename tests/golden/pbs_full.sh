#!/bin/bash
#PBS -N scan
#PBS -l select=2:ncpus=64:mpiprocs=64
#PBS -l walltime=00:30:00
#PBS -q debug-scaling
#PBS -A proj42
#PBS -o /scratch/alice/runs/run-1/job.out
#PBS -e /scratch/alice/runs/run-1/job.err
#PBS -l place=scatter:excl
#PBS -l filesystems=home:eagle

# Written by `taps submit`: app synthetic, executor thread-pool, 2 node(s) x 64.
# The run directory holds config.toml, this script, job.json, and the job's stdout/stderr.
cd /scratch/alice/runs/run-1 || exit 1
echo "taps job ${PBS_JOBID:-${SLURM_JOB_ID:-?}} on $(hostname) at $(date '+%Y-%m-%d %H:%M:%S'): synthetic on thread-pool"
module load openmpi/4.1 || exit 1
export OMP_NUM_THREADS=1
# One driver process on the first node of the allocation.
/opt/taps/bin/taps run -c /scratch/alice/runs/run-1/config.toml --run-dir /scratch/alice/runs/run-1
status=$?
echo "$status" > /scratch/alice/runs/run-1/job.exit
exit "$status"
