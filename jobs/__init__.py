"""Batch-job suite: submit, dry-run, chain and sweep training runs on SLURM (submitit) or locally."""
