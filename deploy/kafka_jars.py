"""Apache Kafka's jars from Maven Central, cached per version; nothing is built.

``deploy/kafka/pom.xml`` lists the broker's runtime and ``deploy/kafka/tools-pom.xml`` the
kafka-tools jar alone (Kafka's command-line tools, run with the broker's jars beside it). Maven
copies each once into a directory of its own under the cache, ``kafka-<version>/libs`` and
``kafka-tools-<version>/libs``; every later use works offline.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from meterflow.errors import LauncherError

KAFKA_ASSETS = Path(__file__).resolve().parent / "kafka"
BROKER_POM = KAFKA_ASSETS / "pom.xml"
TOOLS_POM = KAFKA_ASSETS / "tools-pom.xml"

_COMPLETE_MARKER = ".complete"
_MVN_TIMEOUT_S = 900.0
_TAIL_LINES = 40
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def ensure_kafka_jars(version: str, cache_dir: Path) -> Path:
    """Return ``cache_dir/kafka-<version>/libs``, fetching the broker jars unless cached."""
    return _ensure_jars(BROKER_POM, f"kafka-{version}", version, cache_dir, "kafka_2.13")


def ensure_kafka_tools_jars(version: str, cache_dir: Path) -> Path:
    """Return ``cache_dir/kafka-tools-<version>/libs`` (the kafka-tools jar, without its
    dependencies: put the broker's jars beside it), fetching it unless cached."""
    return _ensure_jars(TOOLS_POM, f"kafka-tools-{version}", version, cache_dir, "kafka-tools")


def _ensure_jars(pom: Path, name: str, version: str, cache_dir: Path, artifact: str) -> Path:
    cache_dir = cache_dir.resolve()  # mvn resolves relative paths against the pom's directory
    target = cache_dir / name
    libs = target / "libs"
    if (target / _COMPLETE_MARKER).is_file():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LauncherError("Maven (mvn) is not on PATH; it is needed once to fetch the Kafka jars")
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Download next to the target, then publish with one rename: an interrupted download leaves
    # only a stray staging directory, never a half-filled cache that looks complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the cache from other local users
    try:
        argv = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging / 'libs'}",
            f"-Dkafka.version={version}",
        ]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=_MVN_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LauncherError(f"mvn did not finish within {_MVN_TIMEOUT_S:.0f}s") from exc
        if done.returncode != 0:
            raise LauncherError(
                f"mvn failed (exit {done.returncode}) fetching {name}:\n"
                + output_tail(done.stdout + done.stderr)
            )
        jars = sorted(p.name for p in (staging / "libs").glob("*.jar"))
        if f"{artifact}-{version}.jar" not in jars:
            raise LauncherError(f"mvn succeeded but {artifact}-{version}.jar is missing")
        (staging / _COMPLETE_MARKER).write_text("\n".join(jars) + "\n")
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return libs


def _publish(staging: Path, target: Path) -> None:
    if target.exists() and not (target / _COMPLETE_MARKER).is_file():
        shutil.rmtree(target)  # left by something else; never by our rename
    try:
        staging.rename(target)
    except OSError:
        if not (target / _COMPLETE_MARKER).is_file():
            raise
        # Another process published the same version first; its copy is as good as ours.


def output_tail(text: str, lines: int = _TAIL_LINES) -> str:
    """The last ``lines`` of a Java or Maven process's output, without stack frames or colour."""
    # Java stack frames and Maven's colour codes bury the one line that says what went wrong.
    kept = [
        _ANSI_ESCAPE.sub("", line)
        for line in text.rstrip().splitlines()
        if not line.startswith("\tat ") and not line.startswith("\t... ")
    ]
    return "\n".join(kept[-lines:])
