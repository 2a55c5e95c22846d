#!/bin/bash
#PBS -N taps-synthetic
#PBS -l select=4:ncpus=8:mpiprocs=8
#PBS -l walltime=01:00:00
#PBS -o /scratch/alice/runs/run-1/job.out
#PBS -e /scratch/alice/runs/run-1/job.err

# Written by `taps submit`: app synthetic, executor mpi, 4 node(s) x 8.
# The run directory holds config.toml, this script, job.json, and the job's stdout/stderr.
cd /scratch/alice/runs/run-1 || exit 1
echo "taps job ${PBS_JOBID:-${SLURM_JOB_ID:-?}} on $(hostname) at $(date '+%Y-%m-%d %H:%M:%S'): synthetic on mpi"
# One line per rank; PBS sets it, Slurm's PBS wrappers (slurm-wlm-torque) need it generated.
PBS_NODEFILE=${PBS_NODEFILE:-$(generate_pbs_nodefile)}
# 32 ranks: rank 0 runs the app and writes the results here, the others are workers.
# Launch profile: mpirun (launchers/profiles.rs; the same as taps run --engine.executor mpi uses).
export OMPI_MCA_orte_enable_recovery=1
taps_root_args=()
if [ "$(id -u)" = 0 ]; then
  taps_root_args=(--allow-run-as-root)
fi
# More ranks than cores: idle OpenMPI ranks must yield the CPU, else they crawl (~1000x slower).
taps_oversubscribe_args=()
if [ "$(nproc)" -lt 8 ]; then
  taps_oversubscribe_args=(--oversubscribe)
  export OMPI_MCA_mpi_yield_when_idle=1
fi
# Rank 0 writes its exit status here: mpirun with recovery exits 0 whatever the ranks return.
printf '%15s\n' '' > /scratch/alice/runs/run-1/.taps-mpi-status
mpirun "${taps_root_args[@]}" "${taps_oversubscribe_args[@]}" -np 32 --hostfile "$PBS_NODEFILE" --map-by ppr:8:node /opt/taps/bin/taps worker -c /scratch/alice/runs/run-1/config.toml --run-dir /scratch/alice/runs/run-1 --status-file /scratch/alice/runs/run-1/.taps-mpi-status
status=$?
rank0=$(tr -d ' \n' < /scratch/alice/runs/run-1/.taps-mpi-status 2>/dev/null)
rm -f /scratch/alice/runs/run-1/.taps-mpi-status
if [ -n "$rank0" ]; then
  status=$rank0
elif [ "$status" = 0 ]; then
  echo "taps: rank 0 of the MPI job left no exit status (mpirun ended with 0): it was killed, or it never started" >&2
  status=1
fi
echo "$status" > /scratch/alice/runs/run-1/job.exit
exit "$status"
