"""Studies a physicist runs on top of the job suite (torch-free: they plan, submit and read artifacts).

- `python -m lib.study labels`: label efficiency, fine-tunes from an MAE encoder (fine-tuned and frozen)
  and from scratch at several numbers of labelled events and seeds (label_plan, labels, label_report);
- `python -m lib.study summary`: the runs of a sweep or an experiment, from MLflow or run directories
  (run_records, summary).
"""
