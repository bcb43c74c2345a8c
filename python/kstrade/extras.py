"""Which pip extra of kstrade provides a module that is not installed, read from the package's
own metadata (pyproject's optional-dependencies), so a missing extra is one line with the pip
command instead of a ModuleNotFoundError traceback."""

from __future__ import annotations

import re
from importlib import metadata

#: What each extra is for, in the words of the setting or command that needs it.
_PURPOSE = {
    "mt5linux": 'execution.broker = "mt5linux" (the RPyC bridge to a MetaTrader 5 terminal under Wine)',
    "mt5": 'execution.broker = "mt5" (the MetaTrader5 package has wheels for Windows only)',
    "acl": "acl apply (confluent-kafka's admin client)",
    "train": "python -m kstrade train",
    "bench": "the replay benchmark's comparison engines",
}
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""extra\s*==\s*['"]([^'"]+)['"]""")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def extra_for(module: str) -> str | None:
    """The extra (other than `dev`) whose requirements provide top-level `module`, if any."""
    top = _normalise(module.split(".")[0])
    try:
        requirements = metadata.requires("kstrade") or []
    except metadata.PackageNotFoundError:
        return None
    for requirement in requirements:
        name, extra = _REQUIREMENT.match(requirement), _EXTRA.search(requirement)
        if name and extra and extra.group(1) != "dev" and _normalise(name.group(1)) == top:
            return extra.group(1)
    return None


def missing_extra_message(exc: ModuleNotFoundError) -> str | None:
    """One line naming the missing module, what needs it and the pip command; None when the
    module belongs to no extra (a broken install: the traceback is the right answer then)."""
    module = exc.name or ""
    extra = extra_for(module)
    if extra is None:
        return None
    purpose = _PURPOSE.get(extra, f"the {extra} extra")
    return f"{module} is not installed; {purpose} needs it: pip install 'kstrade[{extra}]'"
