"""The hooks a subbench plugin may implement.

Every ``register_*`` hook receives a ``register`` callback; call it once per component
(an instance of the matching base class in :mod:`subbench.components`)::

    from subbench import hookimpl

    @hookimpl
    def register_judges(register):
        register(MyJudge())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:  # pragma: no cover
    import click

    from subbench.components import Distiller, Domain, Family, Injector, Judge, Mitigation, Trait

hookspec = HookspecMarker("subbench")
hookimpl = HookimplMarker("subbench")


@hookspec
def register_families(register: Callable[["Family"], None]) -> None:
    """Register model families: how to build or load a base model."""


@hookspec
def register_traits(register: Callable[["Trait"], None]) -> None:
    """Register traits: what may transfer and how it is evaluated."""


@hookspec
def register_injectors(register: Callable[["Injector"], None]) -> None:
    """Register trait injectors: how a teacher is made from a base model."""


@hookspec
def register_domains(register: Callable[["Domain"], None]) -> None:
    """Register data domains: benign prompts, generation and the filter."""


@hookspec
def register_judges(register: Callable[["Judge"], None]) -> None:
    """Register judges: how evaluation samples are scored for a trait."""


@hookspec
def register_mitigations(register: Callable[["Mitigation"], None]) -> None:
    """Register mitigations: defences applied between teacher data and student training."""


@hookspec
def register_distillers(register: Callable[["Distiller"], None]) -> None:
    """Register distillation methods: how a student learns from the kept data."""


@hookspec
def register_commands(cli: "click.Group") -> None:
    """Add sub-commands to the ``subbench`` CLI."""
