"""The package map of docs/architecture.md holds: layers import downwards only, module names are unique,
every file write goes through lib.io.atomic."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["io", "config", "geometry", "normalization", ("data", "sim"), "models", ("losses", "tasks"), "engine",
          "evaluation", "plots", "recipes", "study"]
"""lib packages from the bottom up; a package may import only packages of lower layers (sim: a leaf used
by tests and the demo, beside data; study: the studies on top of the job suite, beside the entry points)."""
RANK = {name: rank for rank, layer in enumerate(LAYERS) for name in (layer if isinstance(layer, tuple) else (layer,))}
IMPORT = re.compile(r"^\s*(?:from|import) lib\.(\w+)", re.M)


def _package_files():
    for path in sorted((REPO / "lib").rglob("*.py")):
        package = path.relative_to(REPO / "lib").parts[0]
        if package in RANK:
            yield package, path


def test_lib_packages_import_only_lower_layers():
    upward = [f"{path.relative_to(REPO)}: {package} imports lib.{other}"
              for package, path in _package_files() for other in IMPORT.findall(path.read_text())
              if other in RANK and other != package and RANK[other] >= RANK[package]]
    assert not upward, "\n".join(upward)


def test_every_package_has_a_layer():
    packages = {p.name for p in (REPO / "lib").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(RANK), f"add {sorted(packages - set(RANK))} to LAYERS and docs/architecture.md"


def test_module_names_are_unique_across_lib_and_jobs():
    names: dict[str, list[str]] = {}
    for root in ("lib", "jobs"):
        for path in (REPO / root).rglob("*.py"):
            if path.name not in ("__init__.py", "__main__.py"):
                names.setdefault(path.stem, []).append(str(path.relative_to(REPO)))
    for package in (REPO / "lib").iterdir():
        if package.is_dir() and (package / "__init__.py").exists():
            names.setdefault(package.name, []).append(str(package.relative_to(REPO)))
    clashes = {name: places for name, places in names.items() if len(places) > 1}
    assert not clashes, clashes


def test_files_are_replaced_only_by_the_atomic_helper():
    writers = [str(path.relative_to(REPO)) for root in ("lib", "jobs") for path in (REPO / root).rglob("*.py")
               if "os.replace" in path.read_text() and path != REPO / "lib" / "io" / "atomic.py"]
    assert not writers, f"write through lib.io.atomic instead of os.replace in {writers}"
