"""Every stage by name: the one registry from which `run`, `backtest` and `service NAME` build
their stages.

A stage is named by its class (`Stage.name`, also its consumer group `kstrade.{name}`) and built
by its `from_settings(settings, bus)` (`kstrade.stage.Stage`). The built-in stages are listed
here as `module:Class` and imported only when built: `service features` never loads the models'
runtime, and `--help` loads no stage at all.

A user's stage joins without touching this file, in either of two ways:

- `module:Class` in the config: `[pipeline] extra_stages = ["mypkg.stages:MyStage"]`. It then
  runs in `run` and `backtest`, and `service NAME` (NAME: its class's `name`) runs it alone.
- A package entry point in group `kstrade.stages`, named as the stage
  (`[project.entry-points."kstrade.stages"] my_stage = "mypkg.stages:MyStage"`): `service
  my_stage` runs it with no config at all, and `extra_stages = ["my_stage"]` adds it to `run`
  and `backtest`. Installing a package alone never changes what a replay does: a backtest's
  outputs depend on the config and the data, not on what else happens to be installed.

Where a user's stage runs in one process (`Pipeline`): after execution and before metrics, in
the order the config lists them. Like signals and execution it runs behind the event-time
fence, instant by instant, so it sees every instant's candles, features, predictions, signals,
orders and fills as the built-in stages do, and the collector sees what it writes (an alert)
in the same instant. It never runs ahead with features and inference: those read nothing a
later stage writes, which cannot be promised of a stage kstrade does not know.

Every reference is checked when the stages are built, and a bad one is a `ConfigError` that
names the entry and what is wrong (no such module, no such class, not a Stage, no
`from_settings`, a name that is taken).
"""

from __future__ import annotations

import importlib
import inspect
import re
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from kstrade.config import ConfigError, Settings
from kstrade.stage import Stage

if TYPE_CHECKING:
    from kstrade.bus import Bus

#: The built-in stages, by name, in pipeline order (each drains before the next in every round).
BUILT_IN: dict[str, str] = {
    "features": "kstrade.features.stage:FeatureStage",
    "inference.lstm": "kstrade.inference.stage:LSTMInference",
    "inference.transformer": "kstrade.inference.stage:TransformerInference",
    "signals": "kstrade.signals.aggregator:SignalAggregator",
    "execution": "kstrade.execution.stage:ExecutionStage",
    "metrics": "kstrade.metrics.collector:MetricsCollector",
}
#: The built-in stages of a full run, in pipeline order.
PIPELINE_ORDER = tuple(BUILT_IN)
#: The stages that read nothing a later stage writes: a replay runs them over many instants at
#: once (big batches, one model call for many vectors); the rest go instant by instant behind an
#: event-time fence, since signals and execution feed each other (`Pipeline`).
RUN_AHEAD = ("features", "inference.lstm", "inference.transformer")
#: The built-in stage the user's stages run before (`extra_stages`): the observer of them all.
USER_STAGES_BEFORE = "metrics"
#: The entry-point group a package registers its stages in.
ENTRY_POINT_GROUP = "kstrade.stages"

#: What a stage's name may be: it names its consumer group, its SCRAM user and its topics' writer.
_STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def load_class(reference: str, where: str = "") -> type[Stage]:
    """The stage class `reference` (`module:Class`) names, checked: importable, a `Stage`
    subclass, with its own `from_settings` and a usable `name`. A `ConfigError` otherwise,
    starting with `where` (the config entry, e.g. "pipeline.extra_stages[0]")."""
    prefix = f"{where}: " if where else ""
    module_name, sep, qualname = reference.partition(":")
    if not sep or not module_name or not qualname:
        raise ConfigError(f"{prefix}{reference!r} is not module:Class (e.g. 'mypkg.stages:MyStage')")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError(
                f"{prefix}{reference!r}: no module named {exc.name!r} (is it installed, or on PYTHONPATH?)"
            ) from None
        raise ConfigError(f"{prefix}{reference!r}: importing {module_name} failed: {exc}") from exc
    except Exception as exc:  # the user's module raised while it was imported
        raise ConfigError(
            f"{prefix}{reference!r}: importing {module_name} failed: {type(exc).__name__}: {exc}"
        ) from exc
    found: object = module
    for part in qualname.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigError(f"{prefix}{reference!r}: module {module_name} has no {qualname!r}") from None
    if not (isinstance(found, type) and issubclass(found, Stage)):
        raise ConfigError(f"{prefix}{reference!r} is not a kstrade.stage.Stage subclass (it is {found!r})")
    constructor = inspect.getattr_static(found, "from_settings")
    if constructor is inspect.getattr_static(Stage, "from_settings") or not isinstance(constructor, classmethod):
        raise ConfigError(
            f"{prefix}{reference!r} has no from_settings(settings, bus) classmethod: the one constructor "
            "by which run, backtest and service build a stage"
        )
    name = getattr(found, "name", None)
    if not isinstance(name, str) or not _STAGE_NAME.match(name):
        raise ConfigError(
            f"{prefix}{reference!r}: its class attribute `name` ({name!r}) must be a name such as 'my_stage' "
            "(letters, digits, '.', '_', '-'): it names the stage's consumer group kstrade.NAME"
        )
    return found


def installed() -> dict[str, str]:
    """The stages installed packages register, by name: their entry points in `ENTRY_POINT_GROUP`."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def extra_stage_classes(settings: Settings) -> list[type[Stage]]:
    """The user's stages `[pipeline] extra_stages` names, in its order, each checked (`load_class`)
    and none with a name that a built-in or an earlier one has."""
    classes: list[type[Stage]] = []
    registered: dict[str, str] | None = None
    taken = set(BUILT_IN)
    for i, item in enumerate(settings.pipeline.extra_stages):
        where = f"pipeline.extra_stages[{i}]"
        if ":" in item:
            cls = load_class(item, where)
        else:
            registered = installed() if registered is None else registered
            if item not in registered:
                known = ", ".join(sorted(registered)) or "none is installed"
                raise ConfigError(
                    f"{where}: {item!r} is not module:Class, and no entry point in group {ENTRY_POINT_GROUP} "
                    f"has that name ({known})"
                )
            cls = _entry_point_class(item, registered[item], where)
        if cls.name in taken:
            raise ConfigError(
                f"{where}: {item!r} is named {cls.name!r}, which "
                + ("is a built-in stage's name" if cls.name in BUILT_IN else "an earlier extra stage has")
                + ": each stage needs a name of its own (its consumer group)"
            )
        taken.add(cls.name)
        classes.append(cls)
    return classes


def _entry_point_class(name: str, reference: str, where: str) -> type[Stage]:
    cls = load_class(reference, f"{where} (entry point {name} = {reference})" if where else f"entry point {name}")
    if cls.name != name:
        raise ConfigError(
            f"entry point {name} = {reference}: the class is named {cls.name!r}; name the entry point as the stage"
        )
    return cls


def stage_classes(settings: Settings) -> list[type[Stage]]:
    """Every stage of a full run, in pipeline order: the built-in ones, with the user's
    (`extra_stage_classes`) before `USER_STAGES_BEFORE`."""
    built_in = [load_class(BUILT_IN[name]) for name in PIPELINE_ORDER]
    at = PIPELINE_ORDER.index(USER_STAGES_BEFORE)
    return [*built_in[:at], *extra_stage_classes(settings), *built_in[at:]]


def names(settings: Settings) -> list[str]:
    """The stages `service NAME` can run under these settings: the built-in ones, the config's
    extra stages and every installed one (imported only to read the config's names)."""
    extra = [cls.name for cls in extra_stage_classes(settings)]
    return [*BUILT_IN, *extra, *(n for n in installed() if n not in BUILT_IN and n not in extra)]


def stage_class(name: str, settings: Settings) -> type[Stage]:
    """The class of the stage `name`: a built-in one, else one of the config's extra stages,
    else an installed one (an entry point). `ValueError` naming the choices for any other."""
    if name in BUILT_IN:
        return load_class(BUILT_IN[name])
    for cls in extra_stage_classes(settings):
        if cls.name == name:
            return cls
    registered = installed()
    if name in registered:
        return _entry_point_class(name, registered[name], "")
    raise ValueError(f"unknown stage {name!r}: choose from {', '.join(sorted(names(settings)))}")


def build(name: str, settings: Settings, bus: Bus) -> Stage:
    """The stage `name` as the settings describe it (`Stage.from_settings`)."""
    return stage_class(name, settings).from_settings(settings, bus)


def pipeline_stages(settings: Settings, bus: Bus) -> list[Stage]:
    """Every stage of a full run, built, in pipeline order (`stage_classes`)."""
    return [cls.from_settings(settings, bus) for cls in stage_classes(settings)]
