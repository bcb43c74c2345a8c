"""scripts/import_cycles.py, which scripts/lint runs: kstrade's modules import each other in no
circle (deferred and type-only imports counted), and the check finds one when there is one, and
only then."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "import_cycles.py"


def check(root: Path, package: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(root), package], capture_output=True, text=True, timeout=60)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_kstrade_has_no_import_cycle() -> None:
    done = check(ROOT / "python", "kstrade")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no import cycle" in done.stdout


@pytest.mark.parametrize(
    "c_imports",
    [
        "from pkg.a import A\n",  # directly
        "from pkg import a\n",  # a module by `from package import module`
        "from . import a\n",  # relative
        "import pkg.a\n",
        "try:\n    from pkg.a import A\nexcept ImportError:\n    A = None\n",
        "from pkg.sub import S\n",  # through a package's __init__, which imports pkg.a
    ],
)
def test_a_circle_of_module_level_imports_fails_naming_its_links(tmp_path: Path, c_imports: str) -> None:
    root = write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import B\nA = 1\n",
            "pkg/b.py": "import pkg.c\nB = 2\n",
            "pkg/c.py": c_imports,
            "pkg/sub/__init__.py": "from pkg.a import A as S\n",
        },
    )
    done = check(root, "pkg")
    assert done.returncode == 1, done.stdout
    assert "pkg.a -> pkg.b" in done.stdout and "pkg.b -> pkg.c" in done.stdout


@pytest.mark.parametrize(
    "b_imports",
    [
        "def late():\n    from pkg.a import A\n    return A\n",  # deferred
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\n",  # type-only
    ],
)
def test_a_deferred_or_type_only_import_that_closes_a_circle_fails_too(tmp_path: Path, b_imports: str) -> None:
    files = {"pkg/__init__.py": "", "pkg/a.py": "from pkg.b import B\n", "pkg/b.py": b_imports + "B = 2\n"}
    root = write(tmp_path, files)
    done = check(root, "pkg")
    assert done.returncode == 1, done.stdout
    assert "pkg.a -> pkg.b" in done.stdout and "pkg.b -> pkg.a" in done.stdout


def test_a_package_importing_its_modules_and_they_their_siblings_is_no_circle(tmp_path: Path) -> None:
    """A package's __init__ that imports its modules, and modules that import their siblings
    through the package they are part of (Python has started the package already)."""
    root = write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import A\nfrom pkg.b import B\n",
            "pkg/a.py": "from pkg.b import B\nA = 1\n",
            "pkg/b.py": "from pkg.c import C\nB = 2\n",
            "pkg/c.py": "C = 3\n",
        },
    )
    done = check(root, "pkg")
    assert done.returncode == 0, done.stdout + done.stderr
