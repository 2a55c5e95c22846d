#!/bin/bash
# custom template
# scheduler=pbs job_name=taps-synthetic nodes=4 ranks_per_node=8 ntasks=32
# walltime=01:00:00 partition=None account=None qos=None
# run_dir=/scratch/alice/runs/run-1 config=/scratch/alice/runs/run-1/config.toml stdout=/scratch/alice/runs/run-1/job.out stderr=/scratch/alice/runs/run-1/job.err exit_file=/scratch/alice/runs/run-1/job.exit
# app=synthetic executor=mpi mpi=True overcommit=False launcher=mpirun
# taps=/opt/taps/bin/taps taps_worker=/opt/taps/bin/taps-worker
cd /scratch/alice/runs/run-1 && mpirun -np 32 --hostfile "$PBS_NODEFILE" --map-by ppr:8:node /opt/taps/bin/taps worker -c /scratch/alice/runs/run-1/config.toml --run-dir /scratch/alice/runs/run-1
echo $? > /scratch/alice/runs/run-1/job.exit
