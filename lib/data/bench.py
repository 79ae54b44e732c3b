"""Throughput of the data loader against plain reading of the same branches.

    python -m lib.data.bench --input PATH [--batch-size 256] [--workers N]

For the ROOT and the npz shards of the input it prints events/s of (a) reading the
input and truth branches with nothing else (uproot per basket range / numpy), (b) one
epoch of `EventLoader` (reading, shuffling, normalization, batching), and b/a. When
the input has only ROOT shards, npz copies are written to a temporary directory.
The last line is the rate of `normalize` alone, usually the largest cost in (b).
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lib.config.schema import DataConfig
from lib.data.files import FileInfo, common_truth_branches, expand_inputs, inspect_files
from lib.data.loader import EventLoader
from lib.data.plan import file_chunks
from lib.data.readers import ChunkReader
from lib.normalization import NormalizationConfig, normalize

DEFAULTS = DataConfig()
INPUTS = [DEFAULTS.npho_branch, DEFAULTS.time_branch]


def _warm_page_cache(paths: Sequence[Path]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def plain_read_rate(infos: Sequence[FileInfo], branches: Sequence[str], batch_size: int) -> float:
    """Events/s of reading `branches` of every file, ROOT in basket-aligned ranges, npz whole."""
    import uproot

    start, n = time.perf_counter(), 0
    for info in infos:
        if info.kind == "root":
            with uproot.open(info.path, array_cache=None) as f:
                tree = f[DEFAULTS.tree_name]
                for c in file_chunks(0, info.boundaries, info.n_entries, batch_size):
                    arrays = tree.arrays(
                        filter_name=list(branches), entry_start=c.start, entry_stop=c.stop, library="np"
                    )
                    n += len(arrays[branches[0]])
        else:
            with np.load(info.path) as f:
                arrays = [f[b] for b in branches]  # each access reads the whole array
                n += len(arrays[0])
    return n / (time.perf_counter() - start)


def loader_rate(paths: Sequence[Path], batch_size: int, workers: int) -> float:
    """Events/s of one shuffled epoch of EventLoader, worker start-up included."""
    loader = EventLoader(
        paths, batch_size=batch_size, norm=NormalizationConfig(), num_workers=workers, tree_name=DEFAULTS.tree_name,
        npho_branch=DEFAULTS.npho_branch, time_branch=DEFAULTS.time_branch, shuffle_buffer=DEFAULTS.shuffle_buffer,
    )  # fmt: skip
    start = time.perf_counter()
    n = sum(len(batch["x"]) for batch in loader)
    return n / (time.perf_counter() - start)


def write_npz_copies(infos: Sequence[FileInfo], branches: Sequence[str], out_dir: Path) -> list[Path]:
    """np.savez copies (uncompressed, as the loader memory-maps them) of ROOT shards."""
    paths = []
    for info in infos:
        dtypes = {b: info.branches[b].dtype for b in branches}
        with ChunkReader([info], DEFAULTS.tree_name, dtypes) as reader:
            arrays = reader.read(0, 0, info.n_entries)
        paths.append(out_dir / f"{info.path.stem}.npz")
        np.savez(paths[-1], **arrays)
    return paths


def normalize_rate(batch_size: int) -> float:
    """Events/s of `normalize` alone on a batch of typical values (the loader's main CPU cost)."""
    from lib.geometry import N_SENSORS

    rng = np.random.default_rng(0)
    npho = rng.exponential(300.0, (batch_size, N_SENSORS)).astype(np.float32)
    time_ = rng.normal(0.0, 5e-8, (batch_size, N_SENSORS)).astype(np.float32)
    cfg, start, repeats = NormalizationConfig(), time.perf_counter(), 5
    for _ in range(repeats):
        normalize(npho, time_, cfg)
    return repeats * batch_size / (time.perf_counter() - start)


def _report(label: str, infos: Sequence[FileInfo], branches: Sequence[str], args: argparse.Namespace) -> str:
    """One output line; each rate is the best of `args.repeat` runs (the machine may be busy)."""
    _warm_page_cache([i.path for i in infos])
    plain = max(plain_read_rate(infos, branches, args.batch_size) for _ in range(args.repeat))
    full = max(loader_rate([i.path for i in infos], args.batch_size, args.workers) for _ in range(args.repeat))
    events = sum(i.n_entries for i in infos)
    return (
        f"{label:5s} {len(infos)} files, {events} events | (a) plain read {plain:8.0f} ev/s | "
        f"(b) loader, {args.workers} workers {full:8.0f} ev/s | b/a {full / plain:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lib.data.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="file, directory or glob of ROOT / npz shards")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the loader run")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement; the best counts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    infos = inspect_files(expand_inputs(args.input, config_key="--input"), DEFAULTS.tree_name, INPUTS, None)
    roots = [i for i in infos if i.kind == "root" and i.n_entries]
    npzs = [i for i in infos if i.kind == "npz" and i.n_entries]
    branches = [*INPUTS, *common_truth_branches(infos, INPUTS)]
    if roots:
        print(_report("root", roots, branches, args))
    with tempfile.TemporaryDirectory() as tmp:
        if not npzs:
            npzs = inspect_files(write_npz_copies(roots, branches, Path(tmp)), DEFAULTS.tree_name, INPUTS, None)
        print(_report("npz", npzs, branches, args))
    print(f"normalize alone (1 process): {normalize_rate(args.batch_size):.0f} ev/s")


if __name__ == "__main__":
    main()
