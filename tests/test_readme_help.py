"""Every help page README.md shows is what the program prints now.

An excerpt is a ```text block whose first line is `$ python -m kstrade [COMMAND] --help`; the
rest of the block is that command's output with the terminal `COLUMNS` wide (argparse wraps at
the terminal's width). After changing the command line, rewrite the excerpts (only those blocks)
with `python tests/test_readme_help.py --write`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: The terminal width the excerpts are printed at.
COLUMNS = 100
#: A help excerpt: the command line after "$ ", then the page, up to the closing fence.
EXCERPT = re.compile(r"^```text\n\$ (python -m kstrade(?: [a-z]+)? --help)\n(.*?)^```$", re.M | re.S)


def help_page(command: str) -> str:
    """What `command` prints, `COLUMNS` wide, without colour (Python >= 3.14 colours help)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KSTRADE_")}
    env |= {"COLUMNS": str(COLUMNS), "NO_COLOR": "1", "PYTHON_COLORS": "0"}
    args = command.split()[3:]  # after "python -m kstrade"
    done = subprocess.run([sys.executable, "-m", "kstrade", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def excerpts(text: str) -> list[tuple[str, str]]:
    """(command, page) of every help excerpt in `text`."""
    return [(m.group(1), m.group(2)) for m in EXCERPT.finditer(text)]


def test_the_readme_shows_the_main_page_and_a_command_page() -> None:
    shown = [command for command, _ in excerpts(README.read_text())]
    assert "python -m kstrade --help" in shown
    assert any(command != "python -m kstrade --help" for command in shown)


def test_every_help_excerpt_is_what_the_program_prints() -> None:
    stale = [command for command, page in excerpts(README.read_text()) if page != help_page(command)]
    assert not stale, f"README.md shows an old page of {stale}: run `python tests/test_readme_help.py --write`"


def test_an_outdated_excerpt_is_found() -> None:
    """The comparison sees a one-word change in a page (so the test above can fail)."""
    text = README.read_text()
    command, page = excerpts(text)[0]
    changed = text.replace(page, page.replace("options:", "optional arguments:", 1), 1)
    (_, old_page) = next(e for e in excerpts(changed) if e[0] == command)
    assert old_page != help_page(command)


def rewrite(text: str) -> str:
    """`text` with every help excerpt's page replaced by the program's, nothing else touched."""
    return EXCERPT.sub(lambda m: f"```text\n$ {m.group(1)}\n{help_page(m.group(1))}```", text)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit(f"usage: python {sys.argv[0]} --write   (rewrites README.md's help excerpts)")
    before = README.read_text()
    after = rewrite(before)
    README.write_text(after)
    print(f"{README}: {'help excerpts rewritten' if after != before else 'help excerpts already up to date'}")
