"""One PNG per run: throughput and latency over time for each load phase, and fold progress.

matplotlib is optional (the ``bench`` extra); without it no plot is drawn and the caller says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LOAD_PHASES = ("noop", "noop_stream", "v2", "v1", "stream", "freshness")
FOLD_PHASES = ("fold_raw", "fold_overwrite")


def _timeline(phases: dict[str, Any], name: str) -> list[dict[str, Any]] | None:
    phase = phases.get(name) or {}
    load = phase.get("background") if name == "freshness" else phase.get("load")
    return load.get("timeline") if isinstance(load, dict) else None


def plot_run(results: dict[str, Any], path: Path) -> Path | None:
    """Draw the run's plot at ``path``; None when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: PLC0415 - optional dependency

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return None
    phases = results["phases"]
    loads = [(n, t) for n in LOAD_PHASES if (t := _timeline(phases, n))]
    folds = [(n, phases[n]) for n in FOLD_PHASES if phases.get(n, {}).get("progress")]
    panels = len(loads) + (1 if folds else 0)
    if panels == 0:
        return None
    figure, axes = plt.subplots(panels, 1, figsize=(10, 2.8 * panels), squeeze=False)
    for axis, (name, timeline) in zip(axes[:, 0], loads, strict=False):
        seconds = [p["t"] + 1 for p in timeline]
        unit = "events" if name.endswith("stream") else "requests"
        axis.plot(seconds, [p[unit] for p in timeline], color="tab:blue")
        axis.set_ylabel(f"{unit}/s", color="tab:blue")
        axis.set_title(f"{name}" + (" (background load)" if name == "freshness" else ""))
        latency = axis.twinx()
        latency.plot(seconds, [p["p50_ms"] for p in timeline], color="tab:green", label="p50")
        latency.plot(seconds, [p["p99_ms"] for p in timeline], color="tab:red", label="p99")
        latency.set_ylabel("latency ms")
        latency.legend(loc="upper right", fontsize="small")
        axis.set_xlabel("second of phase")
    if folds:
        axis = axes[-1, 0]
        for name, fold in folds:
            points = fold["progress"]
            axis.plot([t for t, _ in points], [n for _, n in points], label=name)
        axis.set_title("aggregator fold: records folded since process start")
        axis.set_xlabel("seconds")
        axis.set_ylabel("records")
        axis.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
