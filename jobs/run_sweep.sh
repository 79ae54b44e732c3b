#!/usr/bin/env bash
# Submit a sweep over one config as one job array: one run directory and MLflow run
# per point, named by its values (<RUN_NAME or the config's run name>_lr1e-4_mask0.5) and tagged
# mlflow.tags.sweep = that name (python -m lib.study summary --sweep NAME tabulates them).
#
# Usage: ./jobs/run_sweep.sh [CONFIG] [--kind mae|reg|inp] --grid training.lr=1e-4,3e-4 [--grid ...]
#        ./jobs/run_sweep.sh [CONFIG] --points 'training.lr=1e-4' 'training.lr=3e-4 training.mask_ratio=0.5'
# Check a submission first with DRY_RUN=1; without sbatch on PATH the run happens on this machine.
# Everything is validated in Python (python -m jobs.submit sweep --help); this script only
# picks the interpreter and passes the arguments on.
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
#   RUN_NAME      checkpoint.run_name: Run folder name under save_dir (None: <kind>_<UTC timestamp>) [unset]
#   RESUME_FROM   checkpoint.resume_from: Checkpoint file to resume from [unset]
#   EXECUTOR      slurm: sbatch via submitit; local: a process on this machine; auto: slurm where sbatch and sinfo work [auto]
#   DRY_RUN       Validate and print what would be submitted; submit nothing, create nothing [0]
#   CPU_PROCS     Run CPU-only with this many processes (gloo) instead of slurm.num_gpus GPUs per node [unset]
#   FORCE         Submit into an existing run directory (a finished one is run again from its last.pt) [0]
#   WAIT          Wait for the jobs to end, then print the artifacts and headline numbers (always on for local) [0]
set -euo pipefail
exec "${PYTHON:-python}" -m jobs.submit sweep "$@"
