"""A missing sqlite tracking database is created whole or not at all.

MLflow builds a new sqlite store in a few dozen schema migrations (seconds, longer on a loaded
node). A trainer stopped half-way through them (a preempted job whose tracking thread was given
up) left a database that every later open refused ("table ... already exists"), so the next start
of the run, and every other run sharing the file, lost its tracking. The store is therefore built
in a temporary file beside the target and linked into place only when complete and still absent.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lib.io.atomic import atomic_write

log = logging.getLogger("lib.engine.tracking")

SQLITE_PREFIX = "sqlite:///"


def ensure_sqlite_store(tracking_uri: str) -> None:
    """Create the database of a `sqlite:///` tracking URI when its file is missing (other URIs: nothing)."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return
    path = Path(tracking_uri[len(SQLITE_PREFIX):])
    if path.exists():
        return

    def build(tmp: Path) -> None:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=f"{SQLITE_PREFIX}{tmp}").search_experiments(max_results=1)

    try:
        atomic_write(path, build, what="MLflow database", replace=False)
        log.info("MLflow database %s created", path)
    except FileExistsError:  # another run created it meanwhile: theirs is complete, use it
        pass
