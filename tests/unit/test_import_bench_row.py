"""The bench's import phase: the file it writes, and its row in BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

from loadtest.bench.import_rate import HEADER, write_file
from loadtest.bench.tables import result_rows


def test_the_bench_file_is_a_header_and_one_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    write_file(path, "tokens", 4, 1_796_400_000)
    lines = path.read_text().splitlines()
    assert lines[0] + "\n" == HEADER
    assert lines[1:] == [
        "tokens,1796400000,,cus_0,0",
        "tokens,1796399999,bench-1,cus_1,1",
        "tokens,1796399998,,cus_2,2",
        "tokens,1796399997,bench-3,cus_3,3",
    ]


def test_the_import_row_states_the_rate_the_file_and_the_kafka_ceiling() -> None:
    phases = {
        "import": {
            "lines": 1_000_000,
            "file_mib": 43.2,
            "published": 1_000_000,
            "rejected": 0,
            "import_s": 8.0,
            "events_per_s": 125_000.0,
            "wall_s": 9.5,
            "wall_events_per_s": 105_263.2,
        },
        "kafka_ceiling_stream": {
            "records_per_s": 4000.0,
            "events_per_record": 100,
            "record_bytes": 16_000,
            "mb_per_s": 64.0,
        },
    }
    (row,) = [r for r in result_rows({"phases": phases}) if r[0].startswith("Bulk import")]
    name, result, latency, ceiling, ratio = row
    assert name == "Bulk import: `meterflow import` of a local CSV file"
    assert result.startswith("125,000 events/s (1,000,000 of 1,000,000 lines, 43.2 MiB")
    assert "105,263 events/s for the whole command" in result
    assert latency == "-"
    assert ceiling == "Kafka 400,000 events/s in stream-shaped records"
    assert ratio == "31.2 %"
