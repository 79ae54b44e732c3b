"""Rewrite input files (TTree, RNTuple or npz) into shards of the project's layout.

    python -m lib.data.convert --input DATA... --out DIR --format npz|root [--events-per-shard N]
        [--branches NAME ...] [--tree NAME] [--npho-branch NAME] [--time-branch NAME]

DIR/shard_00000.npz (or .root), ... hold the events of the inputs in order, `events_per_shard` per
shard (the last one the rest), every branch under its own name and in its own dtype (a std::vector
input becomes a fixed (N, 4760) array); a ROOT shard holds them in the TTree "tree" (the schema's
data.tree_name). Default branches: npho, time and every branch all inputs have with fewer values per
event than sensors (truth, reconstruction, run, event). DIR/manifest.json lists the settings, the
inputs (path, entries, bytes) and every finished shard: name, events, the input ranges it holds and
the sha256 of its file.

Sizes, chosen for lib.data's loader:
- npz shards are stored uncompressed, so the loader memory-maps them (the fastest input it reads,
  docs/benchmarks.md); their zip entries carry a fixed date, so the same events give the same bytes.
- ROOT shards are LZ4-compressed (ZLIB read 6x slower in the benchmarks) in baskets of about
  BASKET_BYTES of the widest branch: 881 events of float32 npho[4760]. The loader reads chunks of
  whole baskets of at least one batch, so one basket is one read of the default batch of 256 and
  more; baskets of 1000 events read as fast as uproot alone, baskets of 256 13 % slower.
- events per shard default to the loader's shuffle window (data.shuffle_buffer, 8192 events: 312 MB
  of float32 npho and time), so a window is read from one file and a data set of 100k events still
  has a dozen shards to spread over ranks and workers.

Each shard is written atomically and then entered in the manifest (atomically too), so an
interrupted conversion resumes where it stopped: a rerun with the same inputs and settings skips
the shards whose file matches its checksum, rewrites the others and removes the temporary files the
interruption left. A folder with another conversion, or with data files but no manifest, is refused.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lib.config.schema import DataConfig
from lib.data.files import (
    SUFFIXES, DataError, FileInfo, check_consistent_shapes, common_truth_branches, expand_inputs, for_flags,
    inspect_files,
)
from lib.data.readers import ChunkReader, Columns, concat_columns
from lib.io.atomic import atomic_write, atomic_write_text, temporary_files
from lib.io.checksum import file_sha256
from lib.io.exit_codes import USAGE_ERROR_EXIT_CODE

log = logging.getLogger(__name__)

FORMATS = ("npz", "root")
MANIFEST_NAME = "manifest.json"
SHARD_PATTERN = "shard_{index:05d}.{format}"
BASKET_BYTES = 16 << 20
"""A ROOT shard's baskets hold about this many bytes of its widest branch."""
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
"""The date of every npz entry: the same events give the same bytes."""
FLAGS = {"tree": "--tree", "npho": "--npho-branch", "time": "--time-branch"}
SHARD_TREE = DataConfig().tree_name
"""The TTree of a ROOT shard: the schema's default data.tree_name."""


@dataclass(frozen=True)
class Shard:
    """One output shard: its file name and the entry ranges (input number, start, stop) it holds."""

    name: str
    sources: tuple[tuple[int, int, int], ...]

    @property
    def events(self) -> int:
        return sum(stop - start for _, start, stop in self.sources)


def plan_shards(entries: Sequence[int], events_per_shard: int, fmt: str) -> list[Shard]:
    """Shards of `events_per_shard` consecutive events of inputs with these entry counts, in input order."""
    shards: list[Shard] = []
    current: list[tuple[int, int, int]] = []
    filled = 0
    for k, n in enumerate(entries):
        start = 0
        while start < n:
            take = min(n - start, events_per_shard - filled)
            current.append((k, start, start + take))
            start, filled = start + take, filled + take
            if filled == events_per_shard:
                shards.append(Shard(SHARD_PATTERN.format(index=len(shards), format=fmt), tuple(current)))
                current, filled = [], 0
    if current:
        shards.append(Shard(SHARD_PATTERN.format(index=len(shards), format=fmt), tuple(current)))
    return shards


def basket_events(columns: Columns, events_per_shard: int) -> int:
    """Events per ROOT basket: about BASKET_BYTES of the widest branch, at most a shard."""
    widest = max(array[:1].nbytes for array in columns.values())
    return max(1, min(events_per_shard, BASKET_BYTES // max(widest, 1)))


def write_npz(path: Path, columns: Columns) -> None:
    """An uncompressed npz (what np.savez writes) whose entries carry ZIP_DATE."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in columns.items():
            with archive.open(zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE), "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def write_root(path: Path, columns: Columns, tree: str, basket: int) -> None:
    """A ROOT file with the TTree `tree`, LZ4-compressed, in baskets of `basket` events."""
    import uproot

    types = {name: (a.dtype, a.shape[1:]) if a.ndim > 1 else a.dtype for name, a in columns.items()}
    n = len(next(iter(columns.values())))
    with uproot.recreate(path, compression=uproot.LZ4(1)) as file:
        file.mktree(tree, types)
        for start in range(0, n, basket):
            file[tree].extend({name: array[start:start + basket] for name, array in columns.items()})


def select_branches(infos: Sequence[FileInfo], inputs: list[str], requested: Sequence[str] | None) -> list[str]:
    """The branches to copy: `requested` (checked in every file), else the inputs and the common small branches."""
    if requested is None:
        names = [*inputs, *common_truth_branches(infos, inputs)]
    else:
        names = list(dict.fromkeys([*inputs, *requested]))
        for info in infos:
            for name in names:
                if name not in info.branches:
                    found = ", ".join(info.branches) or "none"
                    raise DataError(f"file {info.path}: branch {name!r} not found (readable branches there: "
                                    f"{found}); check --branches")
                if info.branches[name].vector and name not in inputs:
                    raise DataError(f"file {info.path}: branch {name!r} is a std::vector; only the sensor inputs "
                                    "may be; leave it out of --branches")
    check_consistent_shapes(infos, names)
    return names


class Conversion:
    """One conversion into `out`: its settings, the shards to write and the manifest of those written.
    `tree`: the TTree or RNTuple the inputs hold their events in."""

    def __init__(self, infos: list[FileInfo], out: Path, fmt: str, branches: list[str], tree: str,
                 events_per_shard: int):
        self.infos, self.out, self.fmt, self.tree = infos, out, fmt, tree
        self.dtypes = {name: infos[0].branches[name].dtype for name in branches}
        self.settings = {"format": fmt, "tree": tree, "branches": branches, "events_per_shard": events_per_shard,
                         "inputs": [{"path": str(i.path), "entries": i.n_entries, "bytes": i.path.stat().st_size}
                                    for i in infos]}
        self.shards = plan_shards([i.n_entries for i in infos], events_per_shard, fmt)
        self.done: dict[str, dict[str, Any]] = {}

    def resume(self) -> None:
        """Take over the finished shards of an earlier run into `out` (same settings), or refuse the folder."""
        manifest_path = self.out / MANIFEST_NAME
        if not manifest_path.is_file():
            data = [p.name for p in self.out.glob("*") if p.suffix in SUFFIXES] if self.out.is_dir() else []
            if data:
                raise DataError(f"{self.out} holds data files ({data[0]}, ...) but no {MANIFEST_NAME}; give an empty "
                                "or new --out")
            return
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        differs = [key for key, value in self.settings.items() if manifest.get(key) != value]
        if differs:
            raise DataError(f"{self.out} holds a conversion with other {', '.join(differs)}; give another --out, or "
                            "the same inputs and settings to resume it")
        self.done = {shard["name"]: shard for shard in manifest["shards"]}
        for leftover in temporary_files(self.out):
            log.info("removing %s, left by an interrupted conversion", leftover)
            leftover.unlink()

    def _finished(self, shard: Shard) -> bool:
        entry = self.done.get(shard.name)
        path = self.out / shard.name
        return entry is not None and path.is_file() and file_sha256(path) == entry["sha256"]

    def _write(self, shard: Shard, reader: ChunkReader) -> None:
        columns = concat_columns([reader.read(k, start, stop) for k, start, stop in shard.sources])
        if self.fmt == "npz":
            atomic_write(self.out / shard.name, lambda tmp: write_npz(tmp, columns), "shard")
        else:
            basket = basket_events(columns, self.settings["events_per_shard"])
            atomic_write(self.out / shard.name, lambda tmp: write_root(tmp, columns, SHARD_TREE, basket), "shard")
        self.done[shard.name] = {"name": shard.name, "events": shard.events,
                                 "sha256": file_sha256(self.out / shard.name),
                                 "sources": [list(source) for source in shard.sources]}
        self._write_manifest()

    def _write_manifest(self) -> None:
        shards = [self.done[s.name] for s in self.shards if s.name in self.done]
        manifest = {**self.settings, "events": sum(s.events for s in self.shards),
                    "complete": len(shards) == len(self.shards), "shards": shards}
        atomic_write_text(self.out / MANIFEST_NAME, json.dumps(manifest, indent=1), "manifest")

    def run(self) -> tuple[int, int]:
        """Write every shard not finished yet; returns (shards written, shards skipped)."""
        self.out.mkdir(parents=True, exist_ok=True)
        written = skipped = 0
        with ChunkReader(self.infos, self.tree, self.dtypes) as reader:
            for shard in self.shards:
                if self._finished(shard):
                    skipped += 1
                    continue
                self._write(shard, reader)
                written += 1
                log.info("%s: %d events (%d of %d shards)", self.out / shard.name, shard.events,
                         written + skipped, len(self.shards))
        self._write_manifest()
        return written, skipped


def convert(inputs: Sequence[str], out: Path, fmt: str, events_per_shard: int,
            branches: Sequence[str] | None = None, data: DataConfig | None = None) -> tuple[int, int]:
    """Convert `inputs` into shards in `out` (see the module docstring); returns (shards written, skipped)."""
    data = data or DataConfig()
    sensor_inputs = [data.npho_branch, data.time_branch]
    infos = inspect_files(expand_inputs(list(inputs), config_key="--input"), data.tree_name, sensor_inputs, None)
    conversion = Conversion(infos, out, fmt, select_branches(infos, sensor_inputs, branches), data.tree_name,
                            events_per_shard)
    conversion.resume()
    written, skipped = conversion.run()
    log.info("%d events of %d input file(s) in %d shards in %s (%d written, %d already there)",
             sum(s.events for s in conversion.shards), len(infos), len(conversion.shards), out, written, skipped)
    return written, skipped


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of `python -m lib.data.convert`; bad input exits 2 with a one-line message."""
    parser = argparse.ArgumentParser(prog="python -m lib.data.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, nargs="+", help="data files, folders, globs or list files")
    parser.add_argument("--out", required=True, type=Path, help="folder of the shards and manifest.json")
    parser.add_argument("--format", choices=FORMATS, default="npz", help="shard format (default npz)")
    parser.add_argument("--events-per-shard", type=int, default=DataConfig().shuffle_buffer,
                        help="events per shard (default: data.shuffle_buffer's default, %(default)s)")
    parser.add_argument("--branches", nargs="+",
                        help="branches to copy besides npho and time (default: every small branch all inputs have)")
    parser.add_argument("--tree", dest="tree_name", default=DataConfig().tree_name, help="TTree / RNTuple to read")
    parser.add_argument("--npho-branch", default=DataConfig().npho_branch, help="npho branch of the inputs")
    parser.add_argument("--time-branch", default=DataConfig().time_branch, help="time branch of the inputs")
    args = parser.parse_args(argv)
    if args.events_per_shard < 1:
        parser.error(f"--events-per-shard must be >= 1, got {args.events_per_shard}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = DataConfig(tree_name=args.tree_name, npho_branch=args.npho_branch, time_branch=args.time_branch)
    try:
        convert(args.input, args.out, args.format, args.events_per_shard, args.branches, data)
    except DataError as err:
        log.error("%s", for_flags(str(err), FLAGS))
        return USAGE_ERROR_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
