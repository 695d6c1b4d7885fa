"""The plugin manager: built-ins and third-party plugins, loaded lazily and fail-soft.

Built-in components live in modules listed in :data:`DEFAULT_PLUGINS` and are registered
exactly like third-party ones, which come from the ``subbench`` entry-point group.
``SUBBENCH_LOAD_PLUGINS`` (comma-separated allow-list of third-party plugin names; set but
empty = none) and ``SUBBENCH_DISABLE_PLUGINS`` (comma-separated names, built-ins included)
control what is loaded. A plugin that fails to import or to register is recorded in
:data:`BROKEN` and reported by ``subbench plugins``; it never crashes the CLI.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any

import pluggy

from subbench import hookspecs
from subbench.registry import Registry, empty_registries

DEFAULT_PLUGINS: tuple[str, ...] = (
    "subbench.default_plugins.lm_families",
    "subbench.default_plugins.animal_trait",
    "subbench.default_plugins.lm_injectors",
    "subbench.default_plugins.numbers_domain",
    "subbench.default_plugins.lm_distillers",
    "subbench.default_plugins.lm_judges",
    "subbench.default_plugins.mitigations",
    "subbench.default_plugins.mlp",
    "subbench.default_plugins.leaderboard",
    "subbench.default_plugins.llm_judges",
    "subbench.default_plugins.harmful_trait",
    "subbench.default_plugins.plugin_tools",
    "subbench.default_plugins.doctor",
    "subbench.default_plugins.data_tools",
)

HOOKS = (
    "register_families",
    "register_traits",
    "register_injectors",
    "register_domains",
    "register_judges",
    "register_mitigations",
    "register_distillers",
)


@dataclass
class PluginInfo:
    name: str
    module: str
    version: str | None
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "version": self.version,
            "builtin": self.builtin,
            "hooks": self.hooks,
            "registered": self.registered,
            "error": self.error,
        }


def _env_list(var: str) -> list[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return [x.strip() for x in raw.split(",") if x.strip()]


class PluginManager:
    """Loads plugins once and fills one registry per component kind."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("subbench")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.registries: dict[str, Registry] = empty_registries()
        self._loaded = False

    # -- loading -----------------------------------------------------------------
    def load(self) -> "PluginManager":
        if self._loaded:
            return self
        self._loaded = True
        disabled = set(_env_list("SUBBENCH_DISABLE_PLUGINS") or [])
        for module in DEFAULT_PLUGINS:
            name = module.rsplit(".", 1)[-1]
            if name in disabled or module in disabled:
                continue
            self._load_module(name, module, builtin=True)
        self._load_entry_points(disabled)
        return self

    def _load_module(self, name: str, module: str, builtin: bool, version: str | None = None) -> None:
        from subbench import __version__

        info = PluginInfo(name=name, module=module, version=version or (__version__ if builtin else None), builtin=builtin)
        self.infos[name] = info
        try:
            mod = importlib.import_module(module)
        except Exception as exc:  # a broken plugin is reported, never raised
            info.error = f"import failed: {type(exc).__name__}: {exc}"
            return
        self.register_plugin(mod, name=name, info=info)

    def _load_entry_points(self, disabled: set[str]) -> None:
        from importlib.metadata import entry_points

        allow = _env_list("SUBBENCH_LOAD_PLUGINS")
        try:
            eps = entry_points(group="subbench")
        except Exception:  # pragma: no cover - broken metadata
            return
        for ep in eps:
            if ep.name in disabled or (allow is not None and ep.name not in allow):
                continue
            version = ep.dist.version if getattr(ep, "dist", None) is not None else None
            info = PluginInfo(name=ep.name, module=ep.value, version=version, builtin=False)
            self.infos[ep.name] = info
            try:
                mod = ep.load()
            except Exception as exc:
                info.error = f"import failed: {type(exc).__name__}: {exc}"
                continue
            self.register_plugin(mod, name=ep.name, info=info)

    def register_plugin(self, plugin: Any, name: str, info: PluginInfo | None = None) -> PluginInfo:
        """Register a plugin object or module and run its register hooks (fail-soft)."""
        if info is None:
            info = PluginInfo(name=name, module=getattr(plugin, "__name__", repr(plugin)), version=getattr(plugin, "__version__", None), builtin=False)
            self.infos[name] = info
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            info.error = f"registration failed: {type(exc).__name__}: {exc}"
            return info
        info.hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        for hook in HOOKS:
            if hook not in info.hooks:
                continue
            kind = hook[len("register_"):]
            registry = self.registries[kind]
            added: list[str] = []

            def register(component, _registry=registry, _added=added):
                _registry.register(component, plugin=name)
                _added.append(component.name)

            try:
                getattr(plugin, hook)(register=register)
            except Exception as exc:
                info.error = f"{hook} failed: {type(exc).__name__}: {exc}"
                if os.environ.get("SUBBENCH_DEBUG"):
                    traceback.print_exc(file=sys.stderr)
            if added:
                info.registered[kind] = added
        return info

    def unregister_plugin(self, name: str) -> None:
        """Remove a plugin and everything it registered (for tests and tooling)."""
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        for registry in self.registries.values():
            for comp_name in [c.name for c in registry if c.plugin == name]:
                registry._items.pop(comp_name, None)
        self.infos.pop(name, None)

    def add_commands(self, cli) -> None:
        for name in list(self.infos):
            plugin = self.pm.get_plugin(name)
            if plugin is None or not hasattr(plugin, "register_commands"):
                continue
            before = set(getattr(cli, "commands", {}))
            try:
                plugin.register_commands(cli=cli)
            except Exception as exc:
                self.infos[name].error = f"register_commands failed: {type(exc).__name__}: {exc}"
            added = sorted(set(getattr(cli, "commands", {})) - before)
            if added:
                self.infos[name].registered["commands"] = added

    # -- lookups -----------------------------------------------------------------
    def registry(self, kind: str) -> Registry:
        return self.registries[kind]

    def get(self, kind: str, name: str):
        return self.registries[kind].get(name)


_MANAGER: PluginManager | None = None


def get_manager() -> PluginManager:
    """The process-wide plugin manager, loaded on first use."""
    global _MANAGER
    if _MANAGER is None:
        _MANAGER = PluginManager().load()
    return _MANAGER


def reset_manager() -> None:
    global _MANAGER
    _MANAGER = None


def get(kind: str, name: str):
    return get_manager().get(kind, name)
