"""Every third-party import of the package is declared, in the core or in the extra of the code that makes it.

The package's source is read with `ast` (no module is imported): `import x`, `from x import y`, and the
string forms `require("x", "extra", ...)`, `importlib.import_module("x")`, `find_spec("x")`. Import names
map to distributions through `importlib.metadata.packages_distributions()` (the test venv holds every extra
but `trt`; a name it does not know is taken as its own distribution name).

Rules:
0. every import is declared in some dependency list;
1. a module-level import, followed through the package's own module-level imports (and parent packages),
   needs only the core and the module's extras (EXTRAS_OF): `import cellvit_trt.info` never needs torch;
2. an import inside a function needs only the core and the module's extras;
3. `require("x", "extra", ...)` names an extra that declares x (its message tells the user to install it);
   `find_spec("x")`, and `import x` under `try: ... except ImportError`, are probes (x is used when present)
   and need only rule 0: x is declared somewhere;
4. every extra in pyproject.toml has a job in scripts/check_extras.py or a reason in its NOT_RUN.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"

# module (or package prefix) -> the extras its code paths may use beside the core; the longest prefix wins.
EXTRAS_OF: dict[str, tuple[str, ...]] = {
    "cellvit_trt": (),
    "cellvit_trt.info": ("ort", "export"),  # graphs (onnx), checkpoints (torch)
    "cellvit_trt.demo": ("export", "bench"),
    "cellvit_trt.models": ("export",),
    "cellvit_trt.models.fileformat": (),  # the format check that runs before torch is imported
    "cellvit_trt.training": ("export",),
    "cellvit_trt.training.cli": (),
    "cellvit_trt.export": ("export",),
    "cellvit_trt.export.cli": (),
    "cellvit_trt.export.settings": (),
    "cellvit_trt.export.gate": (),  # `validate` reads the thresholds in any install
    "cellvit_trt.export.samples": (),
    "cellvit_trt.engine": ("trt",),
    "cellvit_trt.engine.cli": (),
    "cellvit_trt.engine.sidecar": (),  # `info` reads engine sidecars in a core install
    "cellvit_trt.engine.environment": (),
    "cellvit_trt.engine.errors": (),
    "cellvit_trt.engine.settings": (),
    "cellvit_trt.runtime.backends.onnxrt": ("ort",),
    "cellvit_trt.runtime.backends.torch": ("export",),
    "cellvit_trt.runtime.backends.torch_cuda": ("export", "trt"),
    "cellvit_trt.runtime.backends.trt": ("trt",),
    "cellvit_trt.runtime.backends.trt_logger": ("trt",),
    "cellvit_trt.runtime.cuda": ("trt",),
    "cellvit_trt.runtime.sources.slide": ("slides",),
    "cellvit_trt.runtime.writers.table": ("parquet",),
    "cellvit_trt.bench": ("bench",),
    "cellvit_trt.bench.cli": (),
    "cellvit_trt.bench.settings": (),
    "cellvit_trt.metrics.runners": ("export",),
    "cellvit_trt.serve": ("serve",),
    "cellvit_trt.serve.cli": (),  # `serve --help` imports no grpc
    "cellvit_trt.serve.settings": (),
    "cellvit_trt.serve.client": ("serve", "slides"),  # streams a slide file it reads with a slide reader
    "cellvit_trt.serve.protogen": ("dev",),  # maintainers regenerate the committed stubs (grpcio-tools)
    "cellvit_trt.scale": ("ray",),  # `run --ray` only; the single-machine path never imports it
    "cellvit_trt.scale.settings": (),  # the --ray options, parsed by `run` in any install
}
# Test-only code in the package (the upstream oracle moved to tests/upstream_oracle.py: none left).
TEST_ONLY: dict[str, set[str]] = {}
STRING_IMPORTS = {"require", "import_module", "find_spec"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _req_name(req: str) -> str:
    return _norm(re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0])


def declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_req_name(r) for r in project["dependencies"]}
    extras = {k: {_req_name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    return core, extras


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")


def extras_of(module: str) -> tuple[str, ...]:
    best = max((k for k in EXTRAS_OF if module == k or module.startswith(k + ".")), key=len)
    return EXTRAS_OF[best]


class Imports(ast.NodeVisitor):
    """(name, lineno, in_function, required_extra) of every import in one module."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.found: list[tuple[str, int, bool, str | None]] = []
        self.depth = 0
        self.guarded = 0  # inside `try: import x / except ImportError`: an optional import, used if present

    def _func(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _func

    def visit_Try(self, node: ast.Try) -> None:
        names = set()
        for h in node.handlers:
            types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
            names |= {t.id for t in types if isinstance(t, ast.Name)}
        guarded = bool(names & {"ImportError", "ModuleNotFoundError"})
        self.guarded += guarded
        for stmt in node.body:
            self.visit(stmt)
        self.guarded -= guarded
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    def _kind(self) -> str | None:
        return "?probe" if self.guarded else None

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, node.lineno, self.depth > 0, self._kind()))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:  # relative: resolve against this module
            base = self.module.split(".")
            base = base[: len(base) - node.level + (1 if self.is_package else 0)]
            name = ".".join(base + ([node.module] if node.module else []))
        else:
            name = node.module or ""
        if name != "__future__":
            self.found.append((name, node.lineno, self.depth > 0, self._kind()))
            for alias in node.names:  # `from cellvit_trt.x import submodule`
                self.found.append((f"{name}.{alias.name}", node.lineno, self.depth > 0, "?submodule"))

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        args = node.args
        if fname in STRING_IMPORTS and args and isinstance(args[0], ast.Constant):
            if isinstance(args[0].value, str):
                extra = "?probe" if fname == "find_spec" else None  # a probe: declared, used if present
                if fname == "require" and len(args) > 1 and isinstance(args[1], ast.Constant):
                    extra = str(args[1].value)
                self.found.append((args[0].value, node.lineno, True, extra))
        self.generic_visit(node)


def scan() -> dict[str, tuple[Path, list[tuple[str, int, bool, str | None]]]]:
    out = {}
    for path in sorted((SRC / "cellvit_trt").rglob("*.py")):
        mod = module_name(path)
        v = Imports(mod, path.name == "__init__.py")
        v.visit(ast.parse(path.read_text(), str(path)))
        out[mod] = (path, v.found)
    return out


MODULES = scan()
CORE, EXTRAS = declared()
DISTS = {k: {_norm(d) for d in v} for k, v in packages_distributions().items()}


def distributions(top: str) -> set[str]:
    return DISTS.get(top, {_norm(top)})


def third_party(name: str) -> str | None:
    top = name.split(".")[0]
    if not top or top in sys.stdlib_module_names or top == "cellvit_trt":
        return None
    return top


def internal_deps(mod: str) -> set[str]:
    """Package modules that importing `mod` executes: its parents and its module-level internal imports."""
    deps = {".".join(mod.split(".")[:i]) for i in range(1, mod.count(".") + 1)}
    for name, _, lazy, kind in MODULES[mod][1]:
        if lazy or not name.startswith("cellvit_trt"):
            continue
        if kind == "?submodule" and name not in MODULES:
            continue  # `from pkg import function`
        target = name if name in MODULES else name.rsplit(".", 1)[0]
        deps.add(target)
        deps |= {".".join(target.split(".")[:i]) for i in range(1, target.count(".") + 1)}
    return {d for d in deps if d in MODULES and d != mod}


def module_level_needs(mod: str) -> dict[str, str]:
    """Third-party top-level names imported when `mod` is imported -> where (module:line)."""
    needs: dict[str, str] = {}
    seen, todo = set(), [mod]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for name, line, lazy, kind in MODULES[m][1]:
            top = third_party(name)
            if top and not lazy and kind not in ("?submodule", "?probe"):
                needs.setdefault(top, f"{m}:{line}")
        todo.extend(internal_deps(m))
    return needs


def allowed_for(mod: str) -> set[str]:
    allowed = set(CORE)
    for e in extras_of(mod):
        assert e in EXTRAS, f"EXTRAS_OF names extra {e!r}, which pyproject.toml does not declare"
        allowed |= EXTRAS[e]
    return allowed


def undeclared(top: str, allowed: set[str], mod: str) -> bool:
    return not (distributions(top) & allowed) and top not in TEST_ONLY.get(mod, set())


def test_every_import_is_declared_somewhere():
    everything = set(CORE).union(*EXTRAS.values())
    bad = [
        f"{mod}:{line}: {name} (distribution {sorted(distributions(third_party(name)))})"
        for mod, (_, found) in MODULES.items()
        for name, line, _, kind in found
        if kind != "?submodule" and third_party(name) and undeclared(third_party(name), everything, mod)
    ]
    assert not bad, "imports no dependency list of pyproject.toml declares:\n" + "\n".join(bad)


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_module_imports_are_in_its_extras(mod):
    allowed = allowed_for(mod)
    bad = [
        f"{top} at {where} (module-level, reached on `import {mod}`)"
        for top, where in module_level_needs(mod).items()
        if undeclared(top, allowed, mod)
    ]
    bad += [
        f"{name} at {mod}:{line} (inside a function)"
        for name, line, lazy, kind in MODULES[mod][1]
        if lazy and kind is None and third_party(name) and undeclared(third_party(name), allowed, mod)
    ]
    extras = ", ".join(extras_of(mod)) or "none"
    assert not bad, f"{mod} (core + extras: {extras}) imports undeclared packages:\n" + "\n".join(bad)


def test_require_names_the_extra_that_installs_the_module():
    bad = []
    for mod, (_, found) in MODULES.items():
        for name, line, _, extra in found:
            if extra is None or extra.startswith("?") or not third_party(name):
                continue
            if extra not in EXTRAS:
                bad.append(f"{mod}:{line}: require({name!r}, {extra!r}): no such extra")
            elif not distributions(third_party(name)) & EXTRAS[extra]:
                bad.append(f"{mod}:{line}: require({name!r}, {extra!r}): that extra does not install it")
    assert not bad, "\n".join(bad)


def _check_extras_module():
    spec = importlib.util.spec_from_file_location("check_extras", ROOT / "scripts" / "check_extras.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_extra_has_an_install_job_or_a_reason():
    ce = _check_extras_module()
    installed = {e for extras in ce.JOBS.values() for e in extras.split(",") if e}
    missing = sorted(set(EXTRAS) - installed - set(ce.NOT_RUN))
    assert not missing, (
        f"extras with no job in scripts/check_extras.py (JOBS), no reason in NOT_RUN: {missing}"
    )
    assert "" in ce.JOBS.values(), "a core-only job must exist"
    for job in ce.JOBS:
        assert (ROOT / "tests" / "install" / "smoke" / f"{job}.py").is_file(), f"smoke script of job {job}"


def test_the_rules_catch_an_undeclared_import(monkeypatch):
    """The checker itself: an import no list declares, or one from another extra, is reported."""
    monkeypatch.setitem(MODULES, "cellvit_trt.kernels.fake", (Path("fake.py"), [("shapely", 1, False, None)]))
    monkeypatch.setitem(MODULES, "cellvit_trt.kernels.fake2", (Path("f2.py"), [("torch", 3, True, None)]))
    monkeypatch.setitem(MODULES, "cellvit_trt.kernels.fake3", (Path("f3.py"), [("pyarrow", 5, False, None)]))
    core_without_shapely = CORE - {"shapely"}
    monkeypatch.setattr(sys.modules[__name__], "CORE", core_without_shapely)
    with pytest.raises(AssertionError, match="shapely"):
        test_every_import_is_declared_somewhere()
    with pytest.raises(AssertionError, match="torch at cellvit_trt.kernels.fake2:3"):
        test_module_imports_are_in_its_extras("cellvit_trt.kernels.fake2")
    with pytest.raises(AssertionError, match="pyarrow"):
        test_module_imports_are_in_its_extras("cellvit_trt.kernels.fake3")


def test_the_packages_own_imports_name_what_exists():
    """`from cellvit_trt.x import name` inside functions runs only on that code path: a name moved elsewhere
    (IMAGE_SUFFIXES left sources.image for sources.detect) breaks it silently until a user hits it."""
    import importlib

    bad = []
    for mod, (path, _) in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module):
                continue
            if not node.module.startswith("cellvit_trt"):
                continue
            target = importlib.import_module(node.module)
            for alias in node.names:
                name = alias.name
                if hasattr(target, name) or f"{node.module}.{name}" in MODULES:
                    continue
                bad.append(f"{mod}:{node.lineno}: from {node.module} import {name}")
    assert not bad, "imports of names that do not exist:\n" + "\n".join(bad)
