"""pytest plugin (registered in tests/conftest.py): tests marked `slurm` need a reachable SLURM cluster.

`@pytest.mark.slurm` needs one usable node, `@pytest.mark.slurm(nodes=2)` two. Without them a
test is skipped with the reason, except in CI (environment CI=true, set by .ci/run), where it
fails: a CI run must not pass while its SLURM suite silently did not run.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest

USABLE_STATES = {"idle", "mixed", "allocated", "completing"}


@functools.lru_cache(maxsize=1)
def usable_nodes() -> tuple[tuple[str, ...], str | None]:
    """(names of the nodes sinfo shows in a usable state, None) or ((), why there are none)."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return (), "sbatch / sinfo not on PATH (start a cluster with tests/slurm/cluster.sh and export SLURM_CONF)"
    try:
        result = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return (), "sinfo did not answer within 30 s"
    if result.returncode != 0:
        return (), f"sinfo does not work: {result.stderr.strip()}"
    states = dict(line.split(maxsplit=1) for line in result.stdout.splitlines() if line.strip())
    usable = tuple(sorted(name for name, state in states.items() if state.rstrip("*~#") in USABLE_STATES))
    return usable, None if usable else f"no usable SLURM node (sinfo: {states})"


def slurm_problem(nodes: int = 1) -> str | None:
    """Why the cluster cannot run a job of `nodes` nodes, or None when it can."""
    usable, problem = usable_nodes()
    if problem is None and len(usable) < nodes:
        problem = (f"the cluster has {len(usable)} usable node(s) {list(usable)}, the test needs {nodes} "
                   "(tests/slurm/cluster.sh starts a two-node cluster)")
    return problem


@pytest.hookimpl(tryfirst=True)  # before the fixtures of the test are set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (outside CI) or fail (CI=true) a `slurm` test that the cluster cannot run."""
    marker = item.get_closest_marker("slurm")
    if marker is None:
        return
    problem = slurm_problem(marker.kwargs.get("nodes", 1))
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and a SLURM test cannot run: {problem}", pytrace=False)
    pytest.skip(problem)
