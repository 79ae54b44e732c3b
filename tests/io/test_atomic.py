"""Atomic writes on a full disk: a one-line DiskFullError naming the file, what it is, the bytes written
and the free space; the target keeps its old content and no temporary file is left behind."""
from __future__ import annotations

import errno
import subprocess

import pytest

from lib.io.atomic import DiskFullError, atomic_write, atomic_write_text, temporary_files


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs (skipped where mounting is not allowed)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "--lazy", str(mount_point)], check=True)  # torch may still hold its file open


def test_full_disk_names_the_file_what_it_is_and_the_space(tiny_disk):
    target = tiny_disk / "last.pt"
    atomic_write_text(target, "old")
    with pytest.raises(DiskFullError) as caught:
        atomic_write_text(target, "x" * (1 << 20), what="checkpoint")
    message = str(caught.value)
    assert message.startswith(f"no space left on device while writing checkpoint {target}: ")
    assert "252.0 KiB written when it failed, 0 B free in " in message and "\n" not in message
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    assert target.read_text() == "old" and temporary_files(tiny_disk) == []


def test_torch_save_on_a_full_disk_is_reported_as_disk_full(tiny_disk):
    torch = pytest.importorskip("torch")
    target = tiny_disk / "best.pt"
    with pytest.raises(DiskFullError, match=rf"while writing checkpoint {target}: .* written when it failed") as caught:
        atomic_write(target, lambda tmp: torch.save({"w": torch.zeros(1 << 18)}, tmp), what="checkpoint")
    assert isinstance(caught.value.__cause__, RuntimeError)  # torch's own error carries no errno
    assert not target.exists() and temporary_files(tiny_disk) == []


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "no space left on device"),
                                         (errno.EDQUOT, "disk quota exceeded")])
def test_enospc_and_edquot_from_the_writer(tmp_path, code, cause):
    def write(tmp):
        tmp.write_bytes(b"12345")
        raise OSError(code, "from the writer")

    with pytest.raises(DiskFullError, match=rf"^{cause} while writing file {tmp_path / 'a.json'}: 5 B written"):
        atomic_write(tmp_path / "a.json", write)
    assert temporary_files(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError("not about space"), OSError(errno.EIO, "I/O error"),
                                   KeyboardInterrupt()])
def test_other_failures_pass_through_unchanged(tmp_path, error):
    def write(tmp):
        raise error

    with pytest.raises(type(error)) as caught:
        atomic_write(tmp_path / "a.json", write)
    assert caught.value is error and temporary_files(tmp_path) == []


def test_create_only_never_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "store.db"
    atomic_write(path, lambda tmp: tmp.write_text("first"), replace=False)
    with pytest.raises(FileExistsError):
        atomic_write(path, lambda tmp: tmp.write_text("second"), replace=False)
    assert path.read_text() == "first"
    assert temporary_files(tmp_path) == []
