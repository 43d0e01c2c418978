"""What the numbers were measured on: hardware, kernel, Python, revision, and the machine's load."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _first_value(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        return None
    return None


def git_revision(repo: Path) -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False, timeout=10
        )
        return done.stdout.strip()

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{rev}+dirty" if git("status", "--porcelain") else rev


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info(repo: Path) -> dict[str, Any]:
    mem_kib = _first_value("/proc/meminfo", "MemTotal")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _first_value("/proc/cpuinfo", "model name") or platform.processor(),
        "ram_gib": round(int(mem_kib.split()[0]) / 1024 / 1024, 1) if mem_kib else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git_rev": git_revision(repo),
    }
