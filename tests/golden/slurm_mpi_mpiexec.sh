#!/bin/bash
#SBATCH --job-name=taps-synthetic
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --time=01:00:00
#SBATCH --chdir=/scratch/alice/runs/run-1
#SBATCH --output=/scratch/alice/runs/run-1/job.out
#SBATCH --error=/scratch/alice/runs/run-1/job.err

# Written by `taps submit`: app synthetic, executor mpi, 1 node(s) x 4.
# The run directory holds config.toml, this script, job.json, and the job's stdout/stderr.
cd /scratch/alice/runs/run-1 || exit 1
echo "taps job ${SLURM_JOB_ID:-?} on $(hostname) at $(date '+%Y-%m-%d %H:%M:%S'): synthetic on mpi"
# More ranks than cores: idle OpenMPI ranks must yield the CPU, else they crawl (~1000x slower).
if [ "$(nproc)" -lt 4 ] && [ -z "${OMPI_MCA_mpi_yield_when_idle+set}" ]; then
  export OMPI_MCA_mpi_yield_when_idle=1
fi
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
# 4 ranks: rank 0 runs the app and writes the results here, the others are workers.
mpiexec -n 4 --bind-to none /opt/taps/bin/taps worker -c /scratch/alice/runs/run-1/config.toml --run-dir /scratch/alice/runs/run-1
status=$?
echo "$status" > /scratch/alice/runs/run-1/job.exit
exit "$status"
