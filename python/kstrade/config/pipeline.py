"""`[pipeline]`: the user's own stages, which join `run`, `backtest` and `service NAME` beside the
built-in ones (`kstrade.stages` resolves and checks them; README, "Your own stage")."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from kstrade.config.base import _Section

#: `package.module:Class` (a class inside a class: `Outer.Inner`).
_CLASS_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
#: The name of an entry point in group `kstrade.stages` (the stage's service name).
_ENTRY_POINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class PipelineSettings(_Section):
    """Which stages run besides the built-in ones."""

    #: Each a `module:Class` (a `kstrade.stage.Stage` subclass with a `from_settings(settings,
    #: bus)` classmethod) or the name of an entry point in group `kstrade.stages`. `run` and
    #: `backtest` run them after execution and before metrics, in this order; `service NAME`
    #: runs one by its class's `name`. Checked (imported) when the stages are built.
    extra_stages: list[str] = Field(default_factory=list)

    @field_validator("extra_stages")
    @classmethod
    def _references(cls, value: list[str]) -> list[str]:
        for item in value:
            if not (_CLASS_REF.match(item) or (":" not in item and _ENTRY_POINT_NAME.match(item))):
                raise ValueError(
                    f"{item!r} is neither module:Class (e.g. 'mypkg.stages:MyStage') nor the name of an entry "
                    "point in group kstrade.stages"
                )
        if len(set(value)) != len(value):
            raise ValueError("extra_stages repeat")
        return value
