#!/bin/bash
# custom template
# scheduler=pbs job_name=taps-synthetic nodes=4 ranks_per_node=8 ntasks=32
# walltime=01:00:00 partition=None account=None qos=None
# run_dir=/scratch/alice/runs/run-1 config=/scratch/alice/runs/run-1/config.toml stdout=/scratch/alice/runs/run-1/job.out stderr=/scratch/alice/runs/run-1/job.err exit_file=/scratch/alice/runs/run-1/job.exit
# app=synthetic executor=mpi mpi=True overcommit=False launcher=mpirun
# taps=/opt/taps/bin/taps taps_worker=/opt/taps/bin/taps-worker
cd /scratch/alice/runs/run-1 || exit 1
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
echo $status > /scratch/alice/runs/run-1/job.exit
