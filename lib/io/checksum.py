"""Checksums of files: how the job suite knows a model, and the converter a finished shard."""
from __future__ import annotations

import hashlib
import os

_BLOCK = 1 << 22


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()
