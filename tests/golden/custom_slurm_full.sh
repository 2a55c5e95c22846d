#!/bin/bash
# custom template
# scheduler=slurm job_name=cholesky-scan nodes=2 ranks_per_node=4 ntasks=8
# walltime=36:00:00 partition=compute account=proj42 qos=debug
# run_dir=/scratch/alice/runs/run-1 config=/scratch/alice/runs/run-1/config.toml stdout=/scratch/alice/runs/run-1/job.out stderr=/scratch/alice/runs/run-1/job.err exit_file=/scratch/alice/runs/run-1/job.exit
# app=synthetic executor=thread-pool mpi=False overcommit=False launcher=mpirun
# taps=/opt/taps/bin/taps taps_worker=/opt/taps/bin/taps-worker
#SBATCH --exclusive
#SBATCH --mem=0
#DW jobdw capacity=1GB access_mode=striped type=scratch
module load openmpi/4.1
module load PrgEnv-gnu cray-hdf5
export OMP_NUM_THREADS=1
ulimit -n 4096
cd /scratch/alice/runs/run-1 || exit 1
/opt/taps/bin/taps run -c /scratch/alice/runs/run-1/config.toml --run-dir /scratch/alice/runs/run-1
status=$?
echo $status > /scratch/alice/runs/run-1/job.exit
