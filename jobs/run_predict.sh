#!/usr/bin/env bash
# Predict with a trained regressor over many input files: one SLURM job array over the files in groups
# of FILES_PER_TASK, one prediction file per input file (<input stem>_pred.root) in
# <model's run>/predictions/<TAG>/, then a merge job (afterok) that writes manifest.json and
# summary.json (events, skipped and failed files, resolutions where the files hold truth).
# Inputs whose prediction by the same model is complete are skipped, so submitting again
# (or a requeued task) predicts only what is missing.
#
# Usage: ./jobs/run_predict.sh MODEL INPUT... [--format checkpoint|onnx] [--tree NAME] [knob flags]
#   MODEL  a regressor checkpoint (artifacts/<run>/checkpoints/best.pt) or an ONNX export (.onnx)
#   INPUT  data files, folders, globs or list files (.txt / .list: one path per line)
# Check a submission first with DRY_RUN=1; without sbatch on PATH the tasks run on this machine.
# Everything is validated in Python (python -m jobs.submit predict --help); this script only
# picks the interpreter and passes the arguments on.
#
# Knobs: environment variables (or the same-named flags, e.g. --files-per-task 4). Unset knobs take
# the model's run config's value; [in brackets] the default of the schema or of the job suite.
#   PYTHON          python interpreter with xecmae installed [python]
#   FILES_PER_TASK  Input files per task of the job array [8]
#   TAG             Folder of the predictions under the model's run: <run>/predictions/<TAG> [named after the input]
#   OUT_DIR         Folder of the predictions instead of <run>/predictions/<TAG> [unset]
#   PARTITION       slurm.partition: None: the cluster's default partition [unset]
#   TIME            slurm.time: Wall-time limit of each task in a SLURM format (HH:MM:SS, D-HH:MM:SS) [24:00:00]
#   CPUS_PER_GPU    slurm.cpus_per_gpu: CPUs of a task (one GPU each) [8]
#   MEM             slurm.mem: Memory per node, e.g. 128G (None: the cluster's default) [unset]
#   ACCOUNT         slurm.account [unset]
#   QOS             slurm.qos [unset]
#   CONSTRAINT      slurm.constraint [unset]
#   EXECUTOR        slurm: sbatch via submitit; local: a process on this machine; auto: slurm where sbatch and sinfo work [auto]
#   DRY_RUN         Validate and print what would be submitted; submit nothing, create nothing [0]
#   CPU_PROCS       Run each task on this many CPUs instead of one GPU [unset]
#   FORCE           Replace predictions of another model in the folder [0]
#   WAIT            Wait for the jobs to end, then print the summary (always on for local) [0]
set -euo pipefail
exec "${PYTHON:-python}" -m jobs.submit predict "$@"
