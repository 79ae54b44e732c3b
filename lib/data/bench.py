"""Throughput of the data loader against plain reading of the same branches.

    python -m lib.data.bench --input PATH [--tree tree] [--npho-branch npho] [--time-branch relative_time]
        [--batch-size 256] [--workers N] [--repeat 5]

For the TTree, RNTuple and npz shards of the input it measures events/s of (a) reading the
input and truth branches of every event with nothing else (uproot in the loader's
basket- or cluster-aligned ranges, files opened once like the loader's / numpy), (b) one
epoch of one `EventLoader` (reading, shuffling, normalization, batching; it keeps its files
open and its worker processes up between epochs, as in training), and prints b/a. Both see
the same events and branches; each runs once untimed first (warm file cache, imports,
worker start-up), then (a) and (b) alternate `--repeat` times and the medians count, so
a load change on a shared machine hits both alike. Containers the input lacks are written
as copies of its first kind of shards into a temporary directory (RNTuple copies with the
TTree's compression and one cluster per basket range of it). The first lines say what
machine and settings the figures belong to; the last line is the rate of `normalize`
alone. Bad input ends with a one-line message and exit code 2.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from lib.config.schema import DataConfig, MAEConfig
from lib.data.build import build_loader
from lib.data.files import (
    DataError, FileInfo, common_truth_branches, expand_inputs, for_flags, inspect_files, open_root,
)
from lib.data.loader import EventLoader
from lib.data.plan import file_chunks
from lib.data.readers import ChunkReader, read_root_range
from lib.io.atomic import atomic_write
from lib.io.exit_codes import USAGE_ERROR_EXIT_CODE
from lib.normalization import NormalizationConfig, normalize

log = logging.getLogger("lib.data.bench")
DEFAULTS = DataConfig()
FLAGS = {"tree": "--tree", "npho": "--npho-branch", "time": "--time-branch"}
"""The flags that stand for the data settings error messages name."""
CONTAINERS = ("TTree", "RNTuple", "npz")


def machine_line() -> str:
    """CPU model, cores, torch threads and load average (the figures depend on all of them)."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), model)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"machine: {model}, {os.cpu_count()} CPUs ({usable} usable), torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, GPU: {'yes' if torch.cuda.is_available() else 'no'}, load average {load}"
    )


class PlainReader:
    """(a): read `branches` of every entry with nothing else: ROOT in the loader's basket-aligned
    chunks through file handles opened once (as the loader keeps its files open between
    epochs), npz whole."""

    def __init__(self, infos: Sequence[FileInfo], branches: Sequence[str], batch_size: int, tree: str):
        self.infos, self.branches = infos, list(branches)
        self.files = {i.path: open_root(i.path) for i in infos if i.kind == "root"}
        self.trees = {path: f[tree] for path, f in self.files.items()}
        self.chunks = {i.path: file_chunks(0, i.boundaries, i.n_entries, batch_size) for i in infos}

    def __call__(self) -> int:
        """Events read."""
        n = 0
        for info in self.infos:
            if info.kind == "root":
                for c in self.chunks[info.path]:
                    arrays = read_root_range(self.trees[info.path], info, self.branches, c.start, c.stop)
                    n += len(arrays[self.branches[0]])
            else:
                with np.load(info.path) as f:
                    arrays = [f[b] for b in self.branches]  # each access reads the whole array
                    n += len(arrays[0])
        return n

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def loader_epoch(loader: EventLoader) -> int:
    """Iterate one epoch of `loader`; events delivered."""
    return sum(len(batch["x"]) for batch in loader)


def timed(run: Callable[[], int]) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds, events) of one call of `run`."""
    wall, cpu = time.perf_counter(), time.process_time()
    n = run()
    return time.perf_counter() - wall, time.process_time() - cpu, n


def write_copies(infos: Sequence[FileInfo], branches: Sequence[str], tree: str, container: str,
                 out_dir: Path) -> list[Path]:
    """Copies of shards as `container`: "npz" (np.savez, uncompressed, as the loader memory-maps
    them) or "RNTuple" (uproot, one cluster per basket range of the source)."""
    paths = []
    for info in infos:
        dtypes = {b: info.branches[b].dtype for b in branches}
        with ChunkReader([info], tree, dtypes) as reader:
            arrays = reader.read(0, 0, info.n_entries)
        if container == "npz":
            write = functools.partial(_savez, arrays=arrays)
        else:
            with open_root(info.path) as source:
                compression = source.file.compression
            write = functools.partial(_rntuple, arrays=arrays, tree=tree, boundaries=info.boundaries,
                                      compression=compression)
        suffix = ".npz" if container == "npz" else ".root"
        paths.append(atomic_write(out_dir / f"{info.path.stem}_{container}{suffix}", write))
    return paths


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as file:  # a file object: np.savez appends no ".npz" to the name
        np.savez(file, **arrays)


def _rntuple(path: Path, arrays: dict[str, np.ndarray], tree: str, boundaries: Sequence[int],
             compression: object) -> None:
    import uproot

    cuts = [b for b in boundaries if b > 0]
    with uproot.recreate(path, compression=compression) as file:
        for start, stop in zip([0, *cuts[:-1]], cuts):
            cluster = {name: values[start:stop] for name, values in arrays.items()}
            if start == 0:
                file[tree] = cluster  # uproot >= 5.7 writes an RNTuple
            else:
                file[tree].extend(cluster)


def normalize_rate(batch_size: int, repeat: int) -> float:
    """Median events/s of `normalize` alone on a batch of typical float32 values."""
    from lib.geometry import N_SENSORS

    rng = np.random.default_rng(0)
    npho = rng.exponential(300.0, (batch_size, N_SENSORS)).astype(np.float32)
    time_ = rng.normal(0.0, 5e-8, (batch_size, N_SENSORS)).astype(np.float32)
    cfg = NormalizationConfig()

    def one_batch() -> int:
        normalize(npho, time_, cfg)
        return batch_size

    one_batch()
    return statistics.median(n / wall for wall, _, n in (timed(one_batch) for _ in range(repeat)))


def compare(label: str, infos: Sequence[FileInfo], branches: Sequence[str], args: argparse.Namespace) -> str:
    """One output line: median [min-max] rates of (a) and (b), the cores (b) kept busy (CPU
    time of this process / wall time), and the ratio of the medians."""
    inputs = [args.npho_branch, args.time_branch]
    data = DataConfig(train_path=[str(i.path) for i in infos], batch_size=args.batch_size, num_workers=args.workers,
                      truth_branches=[b for b in branches if b not in inputs], tree_name=args.tree,
                      npho_branch=args.npho_branch, time_branch=args.time_branch)
    loader = build_loader(MAEConfig(data=data), "train", 0, 1)
    read = PlainReader(infos, branches, args.batch_size, args.tree)
    epoch = functools.partial(loader_epoch, loader)
    read(), epoch()  # warm-up: file cache, imports, allocator
    plain, full = [], []
    for _ in range(args.repeat):
        plain.append(timed(read))
        full.append(timed(epoch))
    read.close()
    plain_rates = [n / wall for wall, _, n in plain]
    full_rates = [n / wall for wall, _, n in full]
    plain_rate, full_rate = statistics.median(plain_rates), statistics.median(full_rates)
    cores = statistics.median(cpu / wall for wall, cpu, _ in full)
    return (
        f"{label:7s} {len(infos)} files, {plain[0][2]} events read, {full[0][2]} per epoch | "
        f"(a) plain read {plain_rate:6.0f} ev/s [{min(plain_rates):.0f}-{max(plain_rates):.0f}] | "
        f"(b) loader {full_rate:6.0f} ev/s [{min(full_rates):.0f}-{max(full_rates):.0f}], "
        f"{cores:.1f} cores busy in this process | b/a {full_rate / plain_rate:.2f}"
    )


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lib.data.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="file, directory or glob of ROOT / npz shards")
    parser.add_argument("--tree", default=DEFAULTS.tree_name, help="TTree / RNTuple name in the ROOT files")
    parser.add_argument("--npho-branch", default=DEFAULTS.npho_branch, help="npho branch")
    parser.add_argument("--time-branch", default=DEFAULTS.time_branch, help="time branch")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the loader run")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement; the median counts")
    args = parser.parse_args(argv)
    for name in ("repeat", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    return args


def run(args: argparse.Namespace) -> None:
    """The benchmark of `main`, writing its lines to stdout."""
    inputs = [args.npho_branch, args.time_branch]
    infos = [i for i in inspect_files(expand_inputs(args.input, config_key="--input"), args.tree, inputs, None)
             if i.n_entries]
    if not infos:
        raise DataError(f"the files of --input {args.input!r} have no entries")
    by_container = {c: [i for i in infos if i.container == c] for c in CONTAINERS}
    branches = [*inputs, *common_truth_branches(infos, inputs)]
    print(machine_line())
    print(
        f"settings: batch size {args.batch_size}, {args.workers} workers, shuffle buffer {DEFAULTS.shuffle_buffer}, "
        f"{len(branches)} branches, median of {args.repeat} timed runs after one warm-up"
    )
    source = next(group for group in by_container.values() if group)
    with tempfile.TemporaryDirectory() as tmp:
        for container, group in by_container.items():
            if not group and (container == "npz" or source[0].kind == "root"):
                copies = write_copies(source, branches, args.tree, container, Path(tmp))
                group = inspect_files(copies, args.tree, inputs, None)
            if group:
                print(compare(container, group, branches, args))
    rate = normalize_rate(args.batch_size, args.repeat)
    print(f"normalize alone (batch of {args.batch_size}, 1 thread): {rate:.0f} ev/s")


def main(argv: list[str] | None = None) -> int:
    """Command line of `python -m lib.data.bench`; returns the exit code."""
    args = _arguments(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(args)
    except DataError as err:
        log.error("%s", for_flags(str(err), FLAGS))
        return USAGE_ERROR_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
