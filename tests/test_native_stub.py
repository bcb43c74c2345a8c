"""The compiled module's stub (python/kstrade/_native.pyi, written by hand) is checked against
the module by mypy's stubtest in scripts/lint. Here: that check passes on the stub as shipped,
and fails, naming what is wrong, on a stub that drifted from the module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUB = ROOT / "python" / "kstrade" / "_native.pyi"
ALLOWLIST = ROOT / "scripts" / "stubtest-allowlist.txt"


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
    stub = STUB.read_text()
    drifted = stub.replace("def murmur2(", "def murmur3(", 1)
    assert drifted != stub
    (package / "_native.pyi").write_text(drifted)
    result = _stubtest(tmp_path)
    assert result.returncode != 0
    assert "kstrade._native.murmur2 is not present in stub" in result.stdout
    assert "kstrade._native.murmur3 is not present at runtime" in result.stdout
