"""Input files: expand path specs and check every file before anything is loaded.

`expand_inputs` turns a file / directory / glob / list file (or a list of them) into a sorted,
de-duplicated list of ROOT and npz shards; `inspect_files` opens each one, reads only
metadata (entries, basket or cluster boundaries, branch shapes) and raises `DataError` naming
the file and what to change when something is wrong. A ROOT file holds its events in a TTree
or in an RNTuple (what uproot >= 5.7 writes for `file["tree"] = {...}` and ROOT's coming
format); both are read alike, RNTuple fields standing for branches.
"""
from __future__ import annotations

import glob
import os
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lib.geometry import N_SENSORS

SUFFIXES = (".root", ".npz")
LIST_SUFFIXES = (".txt", ".list")
"""Suffixes of list files: text files naming one input path per line."""
_GLOB_CHARS = set("*?[")


class DataError(ValueError):
    """Bad input data: missing files, wrong branches or shapes, unreadable files."""


SETTINGS = {"tree": "data.tree_name", "npho": "data.npho_branch", "time": "data.time_branch"}
"""The config keys that error messages tell the user to change; a command line with flags of its
own translates them with `for_flags`."""


def for_flags(message: str, flags: dict[str, str]) -> str:
    """`message` with the config keys of SETTINGS named by the command-line flags of `flags`
    ({"tree": "--tree", ...}), for the CLIs that take those flags instead of a config."""
    for what, flag in flags.items():
        message = message.replace(f"{SETTINGS[what]}=", f"{flag} ").replace(SETTINGS[what], flag)
    return message


@dataclass(frozen=True)
class BranchInfo:
    """Per-event shape and numpy dtype of one branch (shape () for a scalar). A `vector` branch
    (ROOT `std::vector` of numbers) is usable only as a per-sensor input: its shape is taken to
    be (N_SENSORS,) and its length is checked when it is read."""

    shape: tuple[int, ...]
    dtype: np.dtype
    vector: bool = False

    @property
    def values_per_event(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class FileInfo:
    """What `inspect_files` learned about one shard.

    `boundaries` are the entry offsets at which a read may start without splitting a
    compressed basket: the npho branch's basket offsets for a TTree, the cluster boundaries
    for an RNTuple, (0, n_entries) for npz. `branches` holds every fixed-size numeric branch
    of the file (input and truth) and the numeric vectors, `unreadable` the names of the
    others (jagged or object branches).
    """

    path: Path
    kind: str  # "root" or "npz"
    n_entries: int
    boundaries: tuple[int, ...]
    branches: dict[str, BranchInfo] = field(hash=False)
    unreadable: tuple[str, ...] = ()
    container: str = "npz"
    """What holds the events: "TTree", "RNTuple" or "npz"."""


def has_glob(text: str) -> bool:
    """Whether `text` is a glob pattern (holds *, ? or [)."""
    return any(c in _GLOB_CHARS for c in text)


def _files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in SUFFIXES)


def listed_paths(list_file: Path) -> list[str]:
    """The paths of a list file: one per line, blank lines and lines starting with # left out; relative
    paths are relative to the list file's folder."""
    lines = (line.strip() for line in list_file.read_text(encoding="utf-8").splitlines())
    return [os.path.join(list_file.parent, os.path.expanduser(line)) for line in lines
            if line and not line.startswith("#")]


def expand_inputs(
    spec: str | os.PathLike | Sequence[str | os.PathLike], *, config_key: str = "the input path"
) -> list[Path]:
    """Files named by `spec`: a file, a directory (searched recursively), a glob, a list file
    (LIST_SUFFIXES, see `listed_paths`), or a list of those.

    Returns absolute paths, sorted within each item and de-duplicated. Raises `DataError`
    when an item matches nothing; `config_key` (e.g. "data.train_path") names the setting
    to fix in the message.
    """
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not items:
        raise DataError(f"no input files given; set {config_key}")
    found: list[Path] = []
    for item in items:
        text = os.path.expanduser(os.fspath(item))
        if has_glob(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            files = [p for m in matches for p in (_files_under(m) if m.is_dir() else [m]) if p.suffix in SUFFIXES]
            if not files:
                raise DataError(f"no files match {text!r}; check {config_key}")
        elif os.path.isdir(text):
            files = _files_under(Path(text))
            if not files:
                raise DataError(f"directory {text!r} contains no {' or '.join(SUFFIXES)} files; check {config_key}")
        elif os.path.isfile(text) and Path(text).suffix in LIST_SUFFIXES:
            listed = listed_paths(Path(text))
            if not listed:
                raise DataError(f"list file {text!r} names no input files; add one path per line (check {config_key})")
            files = expand_inputs(listed, config_key=f"{config_key} (list file {text})")
        elif os.path.isfile(text):
            path = Path(text)
            if path.suffix not in SUFFIXES:
                raise DataError(
                    f"file {text!r}: unsupported suffix {path.suffix!r}; "
                    f"expected {' or '.join(SUFFIXES)} or a list file ({' or '.join(LIST_SUFFIXES)}); "
                    f"check {config_key}"
                )
            files = [path]
        else:
            raise DataError(f"no such file or directory {text!r}; check {config_key}")
        found.extend(p.resolve() for p in files)
    return list(dict.fromkeys(found))


# ---------------------------------------------------------------- npz


@dataclass(frozen=True)
class NpzMember:
    """Location of one array inside an npz: `offset` is the byte offset of its data in the
    zip file when the member is stored uncompressed (np.savez), else None."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int | None


def npz_members(path: Path) -> dict[str, NpzMember]:
    """Array headers of an npz file, read without loading the arrays."""
    members: dict[str, NpzMember] = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                fmt = np.lib.format
                read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, fortran, dtype = read_header(member)
                header_len = member.tell()
            offset = None
            if info.compress_type == zipfile.ZIP_STORED:
                raw.seek(info.header_offset + 26)
                name_len, extra_len = struct.unpack("<HH", raw.read(4))
                offset = info.header_offset + 30 + name_len + extra_len + header_len
            members[info.filename[: -len(".npy")]] = NpzMember(tuple(shape), np.dtype(dtype), fortran, offset)
    return members


def _inspect_npz(path: Path) -> FileInfo:
    try:
        members = npz_members(path)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, struct.error) as err:
        raise DataError(f"file {path}: not a readable npz file ({err})") from err
    size = path.stat().st_size
    lengths: dict[str, int] = {}
    branches: dict[str, BranchInfo] = {}
    for key, m in members.items():
        if not m.shape:
            raise DataError(f"file {path}: array {key!r} is a scalar; every array needs one row per event")
        nbytes = int(np.prod(m.shape, dtype=np.int64)) * m.dtype.itemsize
        if m.offset is not None and m.offset + nbytes > size:
            raise DataError(f"file {path}: truncated ({size} bytes, array {key!r} ends at byte {m.offset + nbytes})")
        lengths[key] = m.shape[0]
        branches[key] = BranchInfo(m.shape[1:], m.dtype)
    if len(set(lengths.values())) > 1:
        raise DataError(f"file {path}: arrays have different numbers of events {lengths}; all need one row per event")
    n_entries = next(iter(lengths.values()), 0)
    return FileInfo(path, "npz", n_entries, (0, n_entries), branches)


# ---------------------------------------------------------------- ROOT


def _ttree_branch_info(branch) -> BranchInfo | None:
    """Shape and dtype of a fixed-size numeric branch or a numeric std::vector, None for anything
    else (other jagged branches, objects)."""
    import uproot

    interp = branch.interpretation
    if isinstance(interp, uproot.AsDtype):
        to_dtype = interp.to_dtype
        return BranchInfo(tuple(to_dtype.shape), np.dtype(to_dtype.base))
    if isinstance(interp, uproot.AsJagged) and isinstance(interp.content, uproot.AsDtype):
        content = interp.content.to_dtype
        if not content.shape and content.kind in "fiu":
            return BranchInfo((N_SENSORS,), np.dtype(content.base).newbyteorder("="), vector=True)
    return None


def _rntuple_field_info(field) -> BranchInfo | None:
    """`_ttree_branch_info` for an RNTuple field, from its awkward form (std::array nests as
    RegularForm, std::vector as a ListOffsetForm)."""
    import awkward as ak

    record, _ = field.to_akform()
    form, shape = record.contents[0], []
    while isinstance(form, ak.forms.RegularForm):
        shape.append(form.size)
        form = form.content
    if isinstance(form, ak.forms.NumpyForm):
        return BranchInfo((*shape, *form.inner_shape), np.dtype(form.primitive))
    if (not shape and isinstance(form, ak.forms.ListOffsetForm) and isinstance(form.content, ak.forms.NumpyForm)
            and np.dtype(form.content.primitive).kind in "fiu"):
        return BranchInfo((N_SENSORS,), np.dtype(form.content.primitive), vector=True)
    return None


def open_root(path: str | os.PathLike):
    """An uproot file handle that reads with plain file reads and caches no arrays (every
    range is read once). uproot's default source for local files goes through fsspec and an
    asyncio thread: about 1.5x slower for our shards, and its thread takes the GIL."""
    import uproot

    return uproot.open(path, handler=uproot.source.file.MultithreadedFileSource, array_cache=None)


def _ttree_contents(path: Path, tree, size: int, basket_branch: str) -> tuple:
    """(branches, unreadable names, entry boundaries) of a TTree."""
    branches, unreadable = {}, []
    for name, branch in tree.items(recursive=False):
        info = _ttree_branch_info(branch)
        if info is None:
            unreadable.append(name)
        else:
            branches[name] = info
        seeks = np.asarray(branch.member("fBasketSeek"))[: branch.num_baskets]
        if seeks.size and seeks.max() >= size:
            raise DataError(f"file {path}: truncated or corrupt (a basket of branch {name!r} lies beyond its end)")
    n_entries = int(tree.num_entries)
    source = tree[basket_branch] if basket_branch in branches else None
    boundaries = tuple(int(b) for b in source.entry_offsets) if source is not None else (0, n_entries)
    return branches, unreadable, boundaries


def _rntuple_contents(ntuple) -> tuple:
    """(fields, unreadable names, cluster boundaries) of an RNTuple."""
    branches, unreadable = {}, []
    for field in ntuple.fields:
        info = _rntuple_field_info(field)
        if info is None:
            unreadable.append(field.name)
        else:
            branches[field.name] = info
    starts = [int(c.num_first_entry) for c in ntuple.cluster_summaries]
    return branches, unreadable, (*starts, int(ntuple.num_entries))


def _inspect_root(path: Path, tree_name: str, basket_branch: str) -> FileInfo:
    import uproot

    size = path.stat().st_size
    try:
        handle = open_root(path)
    except Exception as err:  # uproot raises many types for a non-ROOT or damaged file
        raise DataError(f"file {path}: not a readable ROOT file ({type(err).__name__}: {err})") from err
    with handle:
        if handle.file.fEND > size:
            raise DataError(f"file {path}: truncated ({size} bytes on disk, the ROOT header says {handle.file.fEND})")
        try:
            events = handle[tree_name]
        except Exception as err:
            found = ", ".join(f"{k.split(';')[0]} ({v})" for k, v in handle.classnames(recursive=False).items())
            raise DataError(f"file {path}: no TTree or RNTuple {tree_name!r} (found: {found or 'nothing'}); "
                            f"set {SETTINGS['tree']}") from err
        if isinstance(events, uproot.TTree):
            contents, container = _ttree_contents(path, events, size, basket_branch), "TTree"
        elif isinstance(events, uproot.models.RNTuple.Model_ROOT_3a3a_RNTuple):
            contents, container = _rntuple_contents(events), "RNTuple"
        else:
            raise DataError(f"file {path}: {tree_name!r} is a {type(events).__name__}, not a TTree or RNTuple; "
                            f"set {SETTINGS['tree']}")
        branches, unreadable, boundaries = contents
        return FileInfo(path, "root", int(events.num_entries), boundaries, branches, tuple(unreadable), container)


# ---------------------------------------------------------------- checks


def _check_branches(info: FileInfo, input_branches: Sequence[str], truth_branches: Sequence[str] | None) -> None:
    where = f"file {info.path}: branch"
    advice = {name: f"set {SETTINGS[what]}" for name, what in zip(input_branches, ("npho", "time"))}
    for name in [*input_branches, *(truth_branches or [])]:
        fix = advice.get(name, "check data.truth_branches")
        if name in info.unreadable:
            raise DataError(f"{where} {name!r} is not a fixed-size numeric branch (jagged or objects); {fix}")
        if name not in info.branches:
            available = ", ".join(info.branches) or "none"
            raise DataError(f"{where} {name!r} not found (fixed-size branches there: {available}); {fix}")
        if info.branches[name].vector and name not in input_branches:
            raise DataError(f"{where} {name!r} is a std::vector; truth branches must have a fixed size ({fix})")
    for name in input_branches:
        branch = info.branches[name]
        if branch.values_per_event != N_SENSORS:
            raise DataError(f"{where} {name!r} has {branch.values_per_event} values per event, expected {N_SENSORS}; "
                            f"{advice[name]}")
        if len(branch.shape) != 1:
            raise DataError(f"{where} {name!r} has shape {branch.shape} per event, expected ({N_SENSORS},)")
        if branch.dtype.kind not in "fiu":
            raise DataError(f"{where} {name!r} has dtype {branch.dtype}, expected a number type; {advice[name]}")


def inspect_files(
    paths: Sequence[Path],
    tree: str,
    branches: Sequence[str],
    truth_branches: Sequence[str] | None,
) -> list[FileInfo]:
    """Metadata of every file, checking that the input `branches` (npho, time) hold one
    value per sensor and that each requested truth branch exists (None: no truth check).

    Raises `DataError` naming the file for an unreadable, truncated or non-ROOT/npz
    file, a missing tree or branch, or a wrong sensor count. Files with zero entries
    are returned as such (the loader skips them).
    """
    infos = []
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"file {path}: does not exist or is not a regular file")
        info = _inspect_npz(path) if path.suffix == ".npz" else _inspect_root(path, tree, branches[0])
        _check_branches(info, branches, truth_branches)
        infos.append(info)
    return infos


def common_truth_branches(infos: Sequence[FileInfo], input_branches: Sequence[str]) -> list[str]:
    """Per-event branches other than the inputs present in every file, in the first file's order:
    the fixed-size ones with fewer values than sensors (truth, reconstruction, run / event). Other
    per-sensor arrays (the research files' nphe, time, relative_npho, solid_angle) are left out:
    reading them would triple the I/O for nothing."""
    names = [n for n, b in infos[0].branches.items()
             if n not in input_branches and not b.vector and b.values_per_event < N_SENSORS]
    return [n for n in names if all(n in info.branches for info in infos)]


def check_consistent_shapes(infos: Sequence[FileInfo], names: Sequence[str]) -> None:
    """Raise `DataError` if a branch has a different per-event shape in some file."""
    for name in names:
        first = infos[0].branches[name]
        for info in infos[1:]:
            if info.branches[name].shape != first.shape:
                raise DataError(
                    f"file {info.path}: branch {name!r} has shape {info.branches[name].shape} per event, "
                    f"but {first.shape} in {infos[0].path}; all files must agree"
                )
