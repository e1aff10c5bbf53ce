"""What every subcommand gets: the project, its settings and contract (read when first used),
and the shape of a command in the table (:class:`Command`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from plumbline.core.paths import Layout, layout, project_root

if TYPE_CHECKING:
    from plumbline.core.contract import Contract
    from plumbline.monitoring.settings import Params


class Context:
    """The project a command runs in. ``params`` (the whole params.yaml) and ``contract`` are
    read on first use, so a command that needs neither does not fail on them."""

    def __init__(self, params_path: Path | None) -> None:
        self.root = project_root()
        self.params_path = params_path or self.root / "params.yaml"
        self.paths: Layout = layout(self.root)

    @cached_property
    def params(self) -> Params:
        from plumbline.monitoring.settings import load_params

        return load_params(self.params_path)

    @cached_property
    def contract(self) -> Contract:
        from plumbline.core.contract import load_contract

        return load_contract(self.params.resolve(self.params.data.contract))


@dataclass(frozen=True)
class Command:
    """One row of the command table: ``plumbline <name>`` runs ``run`` after ``arguments`` added
    its options to the parser. ``run`` returns the one-line summary the CLI prints."""

    name: str
    help: str
    run: Callable[[Context, argparse.Namespace], str]
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
