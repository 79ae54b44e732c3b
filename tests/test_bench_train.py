"""The training-step benchmark: FLOP table, the suite on CPU (--quick), batch search, peak table, recording."""
from __future__ import annotations

from pathlib import Path

import pytest

from lib.bench_suite import SECTION, TABLE_HEADER, append_rows, largest_batch, peak_tflops
from lib.bench_train import main

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_prints_parameters_flops_per_part_and_step_figures(capsys):
    assert main(["--config", str(REPO / "config/mae/mae_demo.yaml"), "--steps", "1", "--warmup", "0",
                 "--synthetic", "--set", "data.batch_size=4"]) == 0
    out = capsys.readouterr().out
    for part in ("total", "face backbones", "hex backbones", "fusion", "decoders", "other"):
        assert f"\n{part}" in out or f"  {part}" in out, part
    assert "parameters" in out and "events_per_s" in out


def test_quick_suite_on_cpu_appends_a_dated_row_per_model(shard_dir, tmp_path, capsys):
    record = tmp_path / "benchmarks.md"
    record.write_text("# Benchmarks\n\nearlier text\n")
    assert main(["--device", "cpu", "--quick", "--suite", "--data", str(shard_dir), "--record", str(record)]) == 0
    text = record.read_text()
    assert text.startswith("# Benchmarks\n\nearlier text\n") and SECTION in text and TABLE_HEADER in text
    rows = [line for line in text.splitlines() if line.startswith("| 20")]
    assert len(rows) == 2 and "mae (tiny)" in rows[0] and "reg (tiny)" in rows[1]
    assert all("| cpu |" in row and "| no | 8 |" in row for row in rows)
    assert rows[0] in capsys.readouterr().out


def test_rows_are_appended_at_the_end_of_the_suite_table_and_nothing_else_moves(tmp_path):
    record = tmp_path / "benchmarks.md"
    record.write_text(f"intro\n\n{SECTION}\n\ntext\n\n{TABLE_HEADER}\n| old row |\n\nafter the table\n\n## Next\n")
    append_rows(record, ["| new 1 |", "| new 2 |"])
    assert record.read_text() == (f"intro\n\n{SECTION}\n\ntext\n\n{TABLE_HEADER}\n| old row |\n| new 1 |\n| new 2 |\n"
                                  "\nafter the table\n\n## Next\n")


@pytest.mark.parametrize("capacity, start, limit, expected", [
    (300, 64, 4096, 256),   # doubles while it fits
    (300, 512, 4096, 256),  # halves until it fits
    (10_000, 64, 2048, 2048),  # stops at the limit (events in the data)
    (1, 64, 4096, 1),
])
def test_largest_batch_is_the_largest_power_of_two_step_that_fits(capacity, start, limit, expected):
    probed = []

    def fits(batch: int) -> bool:
        probed.append(batch)
        return batch <= capacity

    assert largest_batch(fits, start, limit) == expected
    assert all(batch <= limit for batch in probed)


def test_largest_batch_fails_when_nothing_fits():
    with pytest.raises(RuntimeError, match="batch of 1"):
        largest_batch(lambda batch: False, 8, 64)


def test_peak_table_matches_device_names_most_specific_first():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4)
    assert peak_tflops("NVIDIA H200") == pytest.approx(989.4)
    assert peak_tflops("NVIDIA H100 PCIe") == pytest.approx(756.0)
    assert peak_tflops("NVIDIA L4") == pytest.approx(121.0) and peak_tflops("NVIDIA L40S") == pytest.approx(362.0)
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == pytest.approx(312.0)
    assert peak_tflops("cpu") is None
