"""Dead-channel lists: both forms, comments, and one-line file:line errors for every bad input."""
from __future__ import annotations

import numpy as np
import pytest

from lib.data.dead_channels import ALL_RUNS, DeadChannelError, read_dead_channels
from lib.data.files import DataError
from lib.geometry import N_SENSORS, face_ids


def write(tmp_path, text: str, name: str = "dead.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_one_id_per_line_is_one_list_for_every_run(tmp_path):
    dead = read_dead_channels(write(tmp_path, "# dead in 2021\n12\n\n4759   # last sensor\n0\n"))
    assert list(dead.runs) == [ALL_RUNS]
    assert dead.for_run(123).tolist() == [0, 12, 4759] and dead.for_run(7).tolist() == [0, 12, 4759]
    patterns = dead.patterns()
    assert patterns.shape == (1, N_SENSORS) and np.flatnonzero(patterns[0]).tolist() == [0, 12, 4759]


def test_run_id_pairs_give_one_list_per_run_in_file_order(tmp_path):
    dead = read_dead_channels(write(tmp_path, "402000 5\n401000 7  # run id\n402000 9\n"))
    assert list(dead.runs) == [402000, 401000]
    assert dead.for_run(402000).tolist() == [5, 9] and dead.for_run(401000).tolist() == [7]
    assert dead.for_run(1).size == 0
    assert [np.flatnonzero(row).tolist() for row in dead.patterns()] == [[5, 9], [7]]
    assert read_dead_channels(write(tmp_path, "1 5\n2 5\n", "same_id_two_runs.txt")).patterns().sum() == 2


@pytest.mark.parametrize("text, line, words", [
    ("12\n4760\n", 2, "sensor id 4760 is out of range; ids run from 0 to 4759"),
    ("12\n-1\n", 2, "sensor id -1 is out of range"),
    ("12\nPMT7\n", 2, "'PMT7' is not an integer sensor id"),
    ("12.0\n", 1, "'12.0' is not an integer sensor id"),
    ("7\n# x\n7\n", 3, "sensor id 7 is listed twice (first at line 1)"),
    ("1 7\n2 7\n1 7\n", 3, "sensor id 7 is listed twice for run 1 (first at line 1)"),
    ("run1 7\n", 1, "'run1' is not an integer run number"),
    ("-4 7\n", 1, "run number -4 is negative"),
    ("1 2 3\n", 1, "3 values on one line"),
    ("5\n1 6\n", 2, "a `run id` pair in a file whose line 1 gives a bare sensor id"),
], ids=["id-4760", "negative-id", "not-a-number", "float", "duplicate", "duplicate-in-run", "bad-run", "negative-run",
        "three-values", "mixed-forms"])
def test_bad_lists_are_refused_with_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(DeadChannelError) as caught:
        read_dead_channels(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: ") and words in message and "\n" not in message
    assert isinstance(caught.value, DataError)  # reported by the entry points as a usage error (exit 2)


def test_missing_empty_and_binary_files_are_refused(tmp_path):
    with pytest.raises(DeadChannelError, match="data.dead_channels=.*nowhere.txt does not exist"):
        read_dead_channels(tmp_path / "nowhere.txt")
    with pytest.raises(DeadChannelError, match="no sensor ids"):
        read_dead_channels(write(tmp_path, "# nothing dead\n\n"))
    binary = tmp_path / "dead.bin"
    binary.write_bytes(b"\x80\x81\x00\xff")
    with pytest.raises(DeadChannelError, match="not a text file"):
        read_dead_channels(binary)


def test_a_pattern_that_kills_a_whole_face_is_refused_naming_the_face_and_run(tmp_path):
    top = face_ids("top")
    text = "401000 3\n" + "".join(f"402000 {sensor}\n" for sensor in top)
    with pytest.raises(DeadChannelError) as caught:
        read_dead_channels(write(tmp_path, text))
    assert f"{tmp_path / 'dead.txt'}:2: run 402000 marks all 73 sensors of the top face dead" in str(caught.value)
    almost = "".join(f"{sensor}\n" for sensor in top[1:])  # one left: the face can still be filled
    assert read_dead_channels(write(tmp_path, almost, "almost.txt")).patterns().sum() == 72
