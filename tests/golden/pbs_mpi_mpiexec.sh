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
# 3 ranks: rank 0 runs the app and writes the results here, the others are workers.
# Launch profile: mpiexec (launchers/profiles.rs; the same as taps run --engine.executor mpi uses).
export OMPI_MCA_orte_enable_recovery=1
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1
  export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# More ranks than cores: idle OpenMPI ranks must yield the CPU, else they crawl (~1000x slower).
if [ "$(nproc)" -lt 3 ]; then
  export OMPI_MCA_mpi_yield_when_idle=1
  export OMPI_MCA_rmaps_base_oversubscribe=1
fi
# Rank 0 writes its exit status here: mpirun with recovery exits 0 whatever the ranks return.
printf '%15s\n' '' > /scratch/alice/runs/run-1/.taps-mpi-status
mpiexec -n 3 --hostfile "$PBS_NODEFILE" /opt/taps/bin/taps worker -c /scratch/alice/runs/run-1/config.toml --run-dir /scratch/alice/runs/run-1 --status-file /scratch/alice/runs/run-1/.taps-mpi-status
status=$?
rank0=$(tr -d ' \n' < /scratch/alice/runs/run-1/.taps-mpi-status 2>/dev/null)
rm -f /scratch/alice/runs/run-1/.taps-mpi-status
if [ -n "$rank0" ]; then
  status=$rank0
elif [ "$status" = 0 ]; then
  echo "taps: rank 0 of the MPI job left no exit status (mpiexec ended with 0): it was killed, or it never started" >&2
  status=1
fi
echo "$status" > /scratch/alice/runs/run-1/job.exit
exit "$status"
