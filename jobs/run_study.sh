#!/usr/bin/env bash
# Label-efficiency study: fine-tune a regressor from an MAE encoder (pretrained and frozen) and from
# scratch at several numbers N of labelled events (data.max_events) x seeds, every point with the same
# number of optimizer steps, as one job array; once all points have finished, write the table, the plot
# and the MLflow parent run into <save_dir>/<study name>/. Running the same command again skips the
# finished points (on SLURM without WAIT=1: run it again after the jobs have ended for the report).
#
# Usage: ./jobs/run_study.sh --config REG_CONFIG --mae ENCODER --events 250,1000,4000 [--seeds 3]
#            [--modes pretrained,frozen,scratch] [--steps S] [--name NAME] [--set KEY=VALUE ...]
# Check a submission first with DRY_RUN=1; without sbatch on PATH the points run on this machine.
# Everything is validated in Python (python -m lib.study labels --help); this script only
# picks the interpreter and passes the arguments on. Each point trains in one process (CPU_PROCS=1,
# or one GPU).
#
# Knobs: environment variables (or the same-named flags, e.g. --num-gpus 4). Unset knobs take the
# config's value; [in brackets] the default of the schema or of the job suite.
#   PYTHON        python interpreter with xecmae installed [python]
#   CONFIG        config file, or the first argument [that of --kind: config/mae/mae_config.yaml]
#   PARTITION     slurm.partition: None: the cluster's default partition [unset]
#   TIME          slurm.time: Wall-time limit in a SLURM format (HH:MM:SS, D-HH:MM:SS, minutes) [24:00:00]
#   NUM_GPUS      slurm.num_gpus: GPUs per node [1]
#   NODES         slurm.nodes [1]
#   CPUS_PER_GPU  slurm.cpus_per_gpu [8]
#   MEM           slurm.mem: Memory per node, e.g. 128G (None: the cluster's default) [unset]
#   ACCOUNT       slurm.account [unset]
#   QOS           slurm.qos [unset]
#   CONSTRAINT    slurm.constraint [unset]
#   RUN_NAME      Study name (as --name): run names <name>_<mode>_n<N>_s<seed> [labels_<config name>]
#   RESUME_FROM   checkpoint.resume_from: Checkpoint file to resume from [unset]
#   EXECUTOR      slurm: sbatch via submitit; local: a process on this machine; auto: slurm where sbatch and sinfo work [auto]
#   DRY_RUN       Validate and print what would be submitted; submit nothing, create nothing [0]
#   CPU_PROCS     Run CPU-only with this many processes (gloo) instead of slurm.num_gpus GPUs per node [unset]
#   FORCE         Submit into an existing run directory (a finished one is run again from its last.pt) [0]
#   WAIT          Wait for the jobs to end, then print the artifacts and headline numbers (always on for local) [0]
set -euo pipefail
exec "${PYTHON:-python}" -m lib.study labels "$@"
