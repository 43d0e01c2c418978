"""Every Kafka client the processes and tools make gets the operator's TLS and SASL settings.

aiokafka clients are built in ``meterflow/kafka`` only, each with ``**client_security(...)``;
everything else reaches Kafka through those factories, whose ``security`` argument defaults to
PLAINTEXT (the local stack, the bench), so every call outside the tests must pass it. A client
built without it connects in plaintext and without credentials, which a SASL_SSL broker refuses:
``tests/integration/test_kafka_sasl_processes.py`` proves the paths it runs, this the rest.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The bench (loadtest/) is left out: it runs its own local PLAINTEXT broker.
PACKAGES = ("meterflow", "ingest", "aggregator", "deploy")
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
FACTORIES_HOME = ROOT / "meterflow" / "kafka"


def _trees() -> dict[Path, ast.Module]:
    return {
        path: ast.parse(path.read_text(), str(path))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _calls(trees: dict[Path, ast.Module]) -> list[tuple[Path, ast.Call]]:
    return [
        (path, node)
        for path, tree in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    ]


def _security_position(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int | None:
    """Where ``security`` sits among ``fn``'s positional parameters (-1: keyword-only; None:
    no such parameter)."""
    positional = [a.arg for a in fn.args.posonlyargs + fn.args.args if a.arg != "self"]
    if "security" in positional:
        return positional.index("security")
    return -1 if "security" in [a.arg for a in fn.args.kwonlyargs] else None


def _takes_security(trees: dict[Path, ast.Module]) -> dict[str, int]:
    """Module-level functions, and classes by their ``__init__``, with a ``security``
    parameter -> its position (see :func:`_security_position`)."""
    found: dict[str, int] = {}
    for tree in trees.values():
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                defined = [(node.name, node)]
            elif isinstance(node, ast.ClassDef):
                defined = [
                    (node.name, fn)
                    for fn in node.body
                    if isinstance(fn, ast.FunctionDef) and fn.name == "__init__"
                ]
            else:
                continue
            for name, fn in defined:
                position = _security_position(fn)
                if position is not None:
                    found[name] = position
    return found


def _passes_security(call: ast.Call, position: int) -> bool:
    positional = [a for a in call.args if not isinstance(a, ast.Starred)]
    return any(k.arg in ("security", None) for k in call.keywords) or (
        0 <= position < len(positional)
    )


def test_every_aiokafka_client_is_built_with_the_security_settings() -> None:
    unsecured, elsewhere = [], []
    for path, call in _calls(_trees()):
        if _name(call) not in CLIENTS:
            continue
        where = f"{path.relative_to(ROOT)}:{call.lineno}"
        if path.parent != FACTORIES_HOME:
            elsewhere.append(where)
        if not any(
            k.arg is None and isinstance(k.value, ast.Call) and _name(k.value) == "client_security"
            for k in call.keywords
        ):
            unsecured.append(where)
    assert elsewhere == [], "build aiokafka clients in meterflow/kafka, with client_security"
    assert unsecured == []


def test_every_call_of_a_kafka_factory_passes_the_security_settings() -> None:
    trees = _trees()
    factories = _takes_security(trees)
    # The ones this test exists for; a rename must not leave it checking nothing.
    assert {"idempotent_producer", "reading_consumer", "ensure_topics", "Redrive"} <= set(factories)
    missing = [
        f"{path.relative_to(ROOT)}:{call.lineno} {name}()"
        for path, call in _calls(trees)
        if (name := _name(call)) in factories and not _passes_security(call, factories[name])
    ]
    assert missing == []
