"""Registries of components, filled by plugins, with 'Did you mean' lookups."""

from __future__ import annotations

import difflib
from typing import Generic, Iterator, TypeVar

from subbench.components import KINDS, Component
from subbench.errors import SubbenchError, UnknownName

T = TypeVar("T", bound=Component)


class Registry(Generic[T]):
    def __init__(self, kind: str, base: type[T]):
        self.kind = kind  # plural, e.g. "injectors"
        self.base = base
        self._items: dict[str, T] = {}

    @property
    def singular(self) -> str:
        return self.base.kind

    def register(self, component: T, plugin: str | None = None) -> None:
        if not isinstance(component, self.base):
            raise SubbenchError(
                f"Plugin {plugin or '?'} registered {component!r} as a {self.singular}, "
                f"but it is not a subbench.components.{self.base.__name__}."
            )
        if not component.name:
            raise SubbenchError(f"Plugin {plugin or '?'} registered a {self.singular} without a name.")
        if component.name in self._items:
            other = self._items[component.name].plugin
            raise SubbenchError(
                f"{self.singular} '{component.name}' is registered twice (by {other} and {plugin})."
            )
        component.plugin = plugin
        self._items[component.name] = component

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownName(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        names = sorted(self._items)
        hint = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
        if not hint:
            hint = [n for n in names if str(name) in n or n in str(name)][:1]
        did = f" Did you mean: {hint[0]}?" if hint else ""
        return f"Unknown {self.singular} '{name}'.{did} Known: {', '.join(names) or 'none'}."

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._items)


def empty_registries() -> dict[str, Registry]:
    return {kind: Registry(kind, base) for kind, base in KINDS.items()}
