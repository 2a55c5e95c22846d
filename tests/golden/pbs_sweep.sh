#!/bin/bash
#PBS -N taps-sweep
#PBS -l select=2:ncpus=2:mpiprocs=2
#PBS -l walltime=00:10:00
#PBS -o /scratch/alice/runs/run-1/job.out
#PBS -e /scratch/alice/runs/run-1/job.err

# Written by `taps submit`: app synthetic, executor thread-pool,process-pool,mpi, 2 node(s) x 2.
# The sweep directory holds sweep.json, this script, job.json, the job's stdout/stderr and the cells.
cd /scratch/alice/runs/run-1 || exit 1
echo "taps job ${PBS_JOBID:-${SLURM_JOB_ID:-?}} on $(hostname) at $(date '+%Y-%m-%d %H:%M:%S'): synthetic on thread-pool,process-pool,mpi"
# One line per rank; PBS sets it, Slurm's PBS wrappers (slurm-wlm-torque) need it generated.
PBS_NODEFILE=${PBS_NODEFILE:-$(generate_pbs_nodefile)}
# One taps sweep on the first node runs every cell in turn under cells/ here; an mpi
# cell starts its 4 ranks in the allocation. Submit it again to resume.
{ cd /home/alice 2>/dev/null || { echo 'taps: error: cannot enter /home/alice, the directory taps submit ran in (the sweep'\''s relative paths resolve there)' >&2; false; }; } && /opt/taps/bin/taps sweep -c /home/alice/base.toml --vary engine.executor=thread-pool,process-pool,mpi --vary app.task_count=2,3 --repeat 2 --out /scratch/alice/runs/run-1 --mpi-ranks 4 --mpi-launcher mpiexec --mpi-launcher-args "--hostfile $(printf %q "$PBS_NODEFILE")"' --bind-to none'
status=$?
echo "$status" > /scratch/alice/runs/run-1/job.exit
exit "$status"
