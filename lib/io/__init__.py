"""The foundation below every other package: atomic file writes, the names inside a run directory
and the trainer's exit statuses. Torch-free and importing nothing else from lib, so the job suite
uses it on a login node."""
