#!/bin/bash
#SBATCH --job-name=taps-sweep
#SBATCH --nodes=1
#SBATCH --ntasks=3
#SBATCH --time=00:10:00
#SBATCH --chdir=/scratch/alice/runs/run-1
#SBATCH --output=/scratch/alice/runs/run-1/job.out
#SBATCH --error=/scratch/alice/runs/run-1/job.err
#SBATCH --exclusive
#SBATCH --overcommit

# Written by `taps submit`: app synthetic, executor thread-pool,process-pool,mpi, 1 node(s) x 3.
# The sweep directory holds sweep.json, this script, job.json, the job's stdout/stderr and the cells.
cd /scratch/alice/runs/run-1 || exit 1
echo "taps job ${SLURM_JOB_ID:-?} on $(hostname) at $(date '+%Y-%m-%d %H:%M:%S'): synthetic on thread-pool,process-pool,mpi"
# One taps sweep on the first node runs every cell in turn under cells/ here; an mpi
# cell starts its 3 ranks in the allocation. Submit it again to resume.
{ cd /home/alice 2>/dev/null || { echo 'taps: error: cannot enter /home/alice, the directory taps submit ran in (the sweep'\''s relative paths resolve there)' >&2; false; }; } && /opt/taps/bin/taps sweep -c /home/alice/base.toml --vary engine.executor=thread-pool,process-pool,mpi --vary app.task_count=2,3 --repeat 2 --out /scratch/alice/runs/run-1 --mpi-ranks 3 --mpi-launcher mpirun
status=$?
echo "$status" > /scratch/alice/runs/run-1/job.exit
exit "$status"
