#!/bin/bash
#PBS -N taps-synthetic
#PBS -l select=1:ncpus=3:mpiprocs=3
#PBS -l walltime=01:00:00
#PBS -o /scratch/alice/runs/run-1/job.out
#PBS -e /scratch/alice/runs/run-1/job.err

# Written by `taps submit`: app synthetic, executor mpi, 1 node(s) x 3.
# The run directory holds config.toml, this script, job.json, and the job's stdout/stderr.
cd /scratch/alice/runs/run-1 || exit 1
echo "taps job ${PBS_JOBID:-${SLURM_JOB_ID:-?}} on $(hostname) at $(date '+%Y-%m-%d %H:%M:%S'): synthetic on mpi"
# One line per rank; PBS sets it, Slurm's PBS wrappers (slurm-wlm-torque) need it generated.
PBS_NODEFILE=${PBS_NODEFILE:-$(generate_pbs_nodefile)}
# More ranks than cores: idle OpenMPI ranks must yield the CPU, else they crawl (~1000x slower).
if [ "$(nproc)" -lt 3 ] && [ -z "${OMPI_MCA_mpi_yield_when_idle+set}" ]; then
  export OMPI_MCA_mpi_yield_when_idle=1
fi
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
# 3 ranks: rank 0 runs the app and writes the results here, the others are workers.
mpiexec -n 3 --hostfile "$PBS_NODEFILE" /opt/taps/bin/taps worker -c /scratch/alice/runs/run-1/config.toml --run-dir /scratch/alice/runs/run-1
status=$?
echo "$status" > /scratch/alice/runs/run-1/job.exit
exit "$status"
