"""Mutation check of the GPU backends' ordering: every cross-stream wait, event record and synchronisation
must be needed by some simulator test.

The sites are found by parsing the sources (not from a hand-kept list): every statement that calls
`.wait(...)`, `.record(...)`, `.synchronize(...)` or `drain(...)` in the slot ring and the two GPU backends.
Each mutant deletes one of them (the statement becomes `pass`), is executed in-process into fresh module
objects (with fresh copies of the modules that import it), and the simulator tests of
test_gpu_backends_sim.py run against it under every schedule until one fails. A mutant no test kills is a
wait, record or synchronisation that no test needs: either a missing test or a redundant call.

    python -m tests.runtime.test_sync_mutants        # prints every mutant and what killed it
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

from tests.runtime import test_gpu_backends_sim as sim_tests
from tests.simulator.cuda import SCHEDULES
from tests.simulator.harness import Rig

# Import order: each module after those it imports from.
CHAIN = (
    "cellvit_trt.runtime.cuda.slots",
    "cellvit_trt.runtime.backends.streaming",
    "cellvit_trt.runtime.backends.trt",
    "cellvit_trt.runtime.backends.torch_cuda",
)
MUTATED = (
    "cellvit_trt.runtime.cuda.slots",
    "cellvit_trt.runtime.backends.trt",
    "cellvit_trt.runtime.backends.torch_cuda",
)
SYNC_CALLS = {"wait", "record", "synchronize", "drain"}


@dataclass(frozen=True)
class Mutant:
    module: str
    line: int
    statement: str
    source: str

    def __str__(self) -> str:
        return f"{self.module.rsplit('.', 1)[-1]}.py:{self.line}: {self.statement}"


def _path(module: str) -> Path:
    return Path(importlib.util.find_spec(module).origin)


def find_mutants() -> list[Mutant]:
    out = []
    for module in MUTATED:
        source = _path(module).read_text()
        lines = source.splitlines(keepends=True)
        offsets = [0]
        for line in lines:
            offsets.append(offsets[-1] + len(line))
        for node in ast.walk(ast.parse(source)):
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
                continue
            func = node.value.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name not in SYNC_CALLS:
                continue
            start = offsets[node.lineno - 1] + node.col_offset
            end = offsets[node.end_lineno - 1] + node.end_col_offset
            statement = " ".join(source[start:end].split())
            out.append(Mutant(module, node.lineno, statement, source[:start] + "pass" + source[end:]))
    return sorted(out, key=lambda m: (m.module, m.line))


@contextlib.contextmanager
def installed(mutant: Mutant | None):
    """The module chain re-executed from source (one statement deleted in `mutant`), in sys.modules."""
    saved = {m: sys.modules.get(m) for m in CHAIN}
    try:
        for name in CHAIN:
            path = _path(name)
            source = mutant.source if mutant is not None and name == mutant.module else path.read_text()
            module = types.ModuleType(name)
            module.__file__, module.__package__ = str(path), name.rpartition(".")[0]
            sys.modules[name] = module
            exec(compile(source, str(path), "exec"), module.__dict__)
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def simulator_tests() -> list:
    """The backend tests of test_gpu_backends_sim.py that take only the `rig` fixture."""
    return [
        fn
        for name, fn in vars(sim_tests).items()
        if name.startswith("test_") and list(inspect.signature(fn).parameters) == ["rig"]
    ]


def first_failure(tests: list) -> str | None:
    """'test[schedule]: error' of the first failing test, or None when all pass."""
    for schedule in SCHEDULES:
        for test in tests:
            with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
                rig = Rig(schedule, Path(tmp))
                try:
                    test(rig)
                except Exception as exc:  # noqa: BLE001 - any failure kills the mutant
                    rig.close(failed=True)
                    while exc.__context__ is not None:  # the first failure, not a later one in teardown
                        exc = exc.__context__
                    return f"{test.__name__}[{schedule}]: {type(exc).__name__}: {str(exc)[:120]}"
                rig.close()
    return None


def check() -> tuple[list[Mutant], dict[Mutant, str | None]]:
    tests = simulator_tests()
    with installed(None):
        baseline = first_failure(tests)
    assert baseline is None, f"the re-executed, unmutated backends fail: {baseline}"
    mutants = find_mutants()
    results = {}
    for m in mutants:
        with installed(m):
            results[m] = first_failure(tests)
    return mutants, results


def report(mutants: list[Mutant], results: dict[Mutant, str | None]) -> str:
    killed = sum(r is not None for r in results.values())
    lines = [f"sync mutants: {len(mutants)}, killed {killed} ({100 * killed / max(len(mutants), 1):.0f} %)"]
    for m in mutants:
        lines.append(
            f"  {'killed ' if results[m] else 'SURVIVED'} {m}" + (f"  <- {results[m]}" if results[m] else "")
        )
    return "\n".join(lines)


def test_every_wait_record_and_synchronise_is_needed(capsys):
    mutants, results = check()
    text = report(mutants, results)
    with capsys.disabled():
        print("\n" + text)
    modules = {m.module for m in mutants}
    assert modules == set(MUTATED), f"no sites found in {set(MUTATED) - modules}: did the parser miss them?"
    assert len(mutants) >= 10, text
    survivors = [str(m) for m, r in results.items() if r is None]
    assert not survivors, text


if __name__ == "__main__":
    print(report(*check()))
