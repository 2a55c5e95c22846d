#!/bin/bash
#SBATCH --job-name=taps-synthetic
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --time=01:00:00
#SBATCH --chdir=/scratch/alice/runs/run-1
#SBATCH --output=/scratch/alice/runs/run-1/job.out
#SBATCH --error=/scratch/alice/runs/run-1/job.err

# Written by `taps submit`: app synthetic, executor mpi, 2 node(s) x 2.
# The run directory holds config.toml, this script, job.json, and the job's stdout/stderr.
cd /scratch/alice/runs/run-1 || exit 1
echo "taps job ${SLURM_JOB_ID:-?} on $(hostname) at $(date '+%Y-%m-%d %H:%M:%S'): synthetic on mpi"
# More ranks than cores: idle OpenMPI ranks must yield the CPU, else they crawl (~1000x slower).
if [ "$(nproc)" -lt 2 ] && [ -z "${OMPI_MCA_mpi_yield_when_idle+set}" ]; then
  export OMPI_MCA_mpi_yield_when_idle=1
fi
# 4 ranks: rank 0 runs the app and writes the results here, the others are workers.
srun --nodes=2 --ntasks=4 --ntasks-per-node=2 --kill-on-bad-exit=1 --mpi=pmi2 /opt/taps/bin/taps worker -c /scratch/alice/runs/run-1/config.toml --run-dir /scratch/alice/runs/run-1
status=$?
echo "$status" > /scratch/alice/runs/run-1/job.exit
exit "$status"
