"""`python/kstrade/_native.pyi` is written by hand beside the compiled core (rust/python): this
holds it to the module that is actually built. Every public name of `kstrade._native` has a
stub and every stub names something that exists; every class has exactly the public members
its stub lists; and every function and method takes the parameters, by name and in order, that
its stub declares (read from the signatures PyO3 compiles in). A Rust change that adds, renames
or drops something without its stub fails here rather than in a user's type checker."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import kstrade._native as native

STUBS = Path(native.__file__).with_name("_native.pyi")
ROOT = Path(__file__).resolve().parents[1]
ALLOWLIST = ROOT / "scripts" / "stubtest-allowlist.txt"

#: Names the stub declares for type checking only: they are not attributes of the module (and
#: the stub's private aliases, `_Buffer`, `_Spec`, ...: names with a leading underscore).
TYPING_ONLY = {"TopicDescription"}
#: Exception attributes the core sets on an instance when it raises it (`err.code`, ...):
#: declared on the class in the stub, present only on what is raised.
RAISED_ATTRIBUTES = {
    "BusError": {"code"},
    "CodecError": {"code", "field", "offset", "schema", "topic"},
    "MarketError": {"code"},
}


def _stub() -> ast.Module:
    return ast.parse(STUBS.read_text())


def _declared(node: ast.ClassDef) -> set[str]:
    names: set[str] = set()
    for item in node.body:
        if isinstance(item, ast.FunctionDef):
            names.add(item.name)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            names.add(item.target.id)
    return {n for n in names if not n.startswith("_")}


def _top_level(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _parameters(fn: ast.FunctionDef) -> list[str]:
    a = fn.args
    return [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs) if p.arg not in ("self", "cls")]


def _runtime_parameters(obj: object) -> list[str] | None:
    try:
        signature = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # no signature compiled in
        return None
    return [p for p in signature.parameters if p not in ("self", "cls", "$self", "$cls")]


def test_every_public_name_has_a_stub_and_every_stub_exists() -> None:
    runtime = {name for name in dir(native) if not name.startswith("_")}
    stubbed = _top_level(_stub())
    assert runtime - stubbed == set(), "compiled without a stub"
    private = {name for name in stubbed if name.startswith("_")}
    assert stubbed - runtime - TYPING_ONLY - private == set(), "a stub for nothing compiled"


def test_every_class_has_exactly_the_members_its_stub_lists() -> None:
    for node in _stub().body:
        if not isinstance(node, ast.ClassDef) or node.name in TYPING_ONLY:
            continue
        cls = getattr(native, node.name)
        runtime = {name for name in vars(cls) if not name.startswith("_")}
        declared = _declared(node) - RAISED_ATTRIBUTES.get(node.name, set())
        assert (node.name, runtime - declared) == (node.name, set()), "compiled without a stub"
        assert (node.name, declared - runtime) == (node.name, set()), "a stub for nothing compiled"


def test_every_function_and_method_takes_the_parameters_its_stub_declares() -> None:
    checked = 0
    for node in _stub().body:
        if isinstance(node, ast.FunctionDef):
            pairs = [(node.name, getattr(native, node.name), node)]
        elif isinstance(node, ast.ClassDef) and node.name not in TYPING_ONLY:
            cls = getattr(native, node.name)
            pairs = [
                (f"{node.name}.{item.name}", cls if item.name == "__init__" else getattr(cls, item.name), item)
                for item in node.body
                if isinstance(item, ast.FunctionDef)
                and not any(isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list)
                and (item.name == "__init__" or not item.name.startswith("_"))
            ]
        else:
            continue
        for name, obj, fn in pairs:
            runtime = _runtime_parameters(obj)
            if runtime is None:
                continue
            checked += 1
            assert (name, runtime) == (name, _parameters(fn))
    assert checked >= 80, f"only {checked} signatures could be read from the compiled module"


# mypy's stubtest (scripts/lint) checks more than the names above: kinds of parameters, defaults,
# constructors, @final. It must pass as shipped, and fail on a stub that drifted.
def _stubtest(stubs: Path | None) -> subprocess.CompletedProcess[str]:
    """stubtest of kstrade._native, with the stub from `stubs` (a directory holding
    kstrade/_native.pyi) where given, else the package's own."""
    env = None if stubs is None else {**os.environ, "MYPYPATH": str(stubs)}
    command = [sys.executable, "-m", "mypy.stubtest", "--ignore-disjoint-bases", "--allowlist", str(ALLOWLIST)]
    return subprocess.run([*command, "kstrade._native"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_the_stub_matches_the_compiled_module() -> None:
    result = _stubtest(None)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_stub_that_drifted_from_the_module_fails_the_check(tmp_path: Path) -> None:
    package = tmp_path / "kstrade"
    package.mkdir()
    (package / "__init__.pyi").write_text("")
    stub = STUBS.read_text()
    drifted = stub.replace("def murmur2(", "def murmur3(", 1)
    assert drifted != stub
    (package / "_native.pyi").write_text(drifted)
    result = _stubtest(tmp_path)
    assert result.returncode != 0
    assert "kstrade._native.murmur2 is not present in stub" in result.stdout
    assert "kstrade._native.murmur3 is not present at runtime" in result.stdout
