#!/bin/bash
#SBATCH --job-name=taps-synthetic
#SBATCH --nodes=1
#SBATCH --ntasks=3
#SBATCH --time=00:10:00
#SBATCH --chdir=/scratch/alice/runs/run-1
#SBATCH --output=/scratch/alice/runs/run-1/job.out
#SBATCH --error=/scratch/alice/runs/run-1/job.err
#SBATCH --exclusive
#SBATCH --overcommit

# Written by `taps submit`: app synthetic, executor mpi, 1 node(s) x 3.
# The run directory holds config.toml, this script, job.json, and the job's stdout/stderr.
cd /scratch/alice/runs/run-1 || exit 1
echo "taps job ${SLURM_JOB_ID:-?} on $(hostname) at $(date '+%Y-%m-%d %H:%M:%S'): synthetic on mpi"
# More ranks than cores: idle OpenMPI ranks must yield the CPU, else they crawl (~1000x slower).
if [ "$(nproc)" -lt 3 ] && [ -z "${OMPI_MCA_mpi_yield_when_idle+set}" ]; then
  export OMPI_MCA_mpi_yield_when_idle=1
fi
# 3 ranks: rank 0 runs the app and writes the results here, the others are workers.
srun --nodes=1 --ntasks=3 --ntasks-per-node=3 --mpi=pmix --kill-on-bad-exit=1 /opt/taps/bin/taps worker -c /scratch/alice/runs/run-1/config.toml --run-dir /scratch/alice/runs/run-1
status=$?
echo "$status" > /scratch/alice/runs/run-1/job.exit
exit "$status"
