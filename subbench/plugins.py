"""The plugin manager: built-ins and third-party plugins, loaded lazily and fail-soft.

Built-in components live in modules listed in :data:`DEFAULT_PLUGINS` and are registered
exactly like third-party ones, which come from the ``subbench`` entry-point group.
``SUBBENCH_LOAD_PLUGINS`` (comma-separated allow-list of third-party plugin names; set but
empty = none) and ``SUBBENCH_DISABLE_PLUGINS`` (comma-separated names, built-ins included)
control what is loaded. A plugin that fails to import or to register (an exception or a
``sys.exit``) is recorded as its load error and reported by ``subbench plugins``; it never
crashes the CLI. Each plugin's import and registration is timed: a third-party plugin
slower than ``SUBBENCH_SLOW_PLUGIN_S`` (0.5 s) is named on stderr, since it delays every
command. A plugin may add commands but not replace an existing one (``run``, or another
plugin's) unless ``SUBBENCH_ALLOW_OVERRIDE`` names it.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
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
    "subbench.default_plugins.code_domain",
    "subbench.default_plugins.cot_domain",
    "subbench.default_plugins.lm_distillers",
    "subbench.default_plugins.lm_judges",
    "subbench.default_plugins.mitigations",
    "subbench.default_plugins.mlp",
    "subbench.default_plugins.leaderboard",
    "subbench.default_plugins.api_judges",
    "subbench.default_plugins.api_families",
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
    load_seconds: float = 0.0
    overrides: list[str] = field(default_factory=list)
    #: loaded by name (built-in or an installed entry point), so a worker process loads it too
    portable: bool = False

    def add_error(self, msg: str) -> None:
        self.error = msg if not self.error else f"{self.error}; {msg}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "version": self.version,
            "builtin": self.builtin,
            "hooks": self.hooks,
            "registered": self.registered,
            "error": self.error,
            "load_seconds": round(self.load_seconds, 3),
            "commands": list(self.registered.get("commands", [])),
            "overrides": list(self.overrides),
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
        self._warned: set[str] = set()

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
        self.warn_slow()
        return self

    def warn_slow(self) -> None:
        """Name, once, each third-party plugin whose loading delays every command."""
        try:
            limit = float(os.environ.get("SUBBENCH_SLOW_PLUGIN_S", "0.5"))
        except ValueError:
            limit = 0.5
        for info in self.infos.values():
            if not info.builtin and info.load_seconds > limit and info.name not in self._warned:
                self._warned.add(info.name)
                print(f"subbench: plugin {info.name} took {info.load_seconds:.1f} s to load; "
                      f"SUBBENCH_DISABLE_PLUGINS={info.name} skips it.", file=sys.stderr, flush=True)

    def _load_module(self, name: str, module: str, builtin: bool, version: str | None = None) -> None:
        from subbench import __version__

        info = PluginInfo(name=name, module=module, version=version or (__version__ if builtin else None), builtin=builtin,
                          portable=True)
        self.infos[name] = info
        started = time.perf_counter()
        try:
            mod = importlib.import_module(module)
        except (Exception, SystemExit) as exc:  # a broken plugin is reported, never raised
            info.add_error(f"import failed: {_describe(exc)}")
        else:
            self.register_plugin(mod, name=name, info=info)
        info.load_seconds += time.perf_counter() - started

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
            info = PluginInfo(name=ep.name, module=ep.value, version=version, builtin=False, portable=True)
            self.infos[ep.name] = info
            started = time.perf_counter()
            try:
                mod = ep.load()
            except (Exception, SystemExit) as exc:
                info.add_error(f"import failed: {_describe(exc)}")
            else:
                self.register_plugin(mod, name=ep.name, info=info)
            info.load_seconds += time.perf_counter() - started

    def register_plugin(self, plugin: Any, name: str, info: PluginInfo | None = None) -> PluginInfo:
        """Register a plugin object or module and run its register hooks (fail-soft)."""
        if info is None:
            info = PluginInfo(name=name, module=getattr(plugin, "__name__", repr(plugin)), version=getattr(plugin, "__version__", None), builtin=False)
            self.infos[name] = info
        try:
            self.pm.register(plugin, name=name)
        except (Exception, SystemExit) as exc:
            info.add_error(f"registration failed: {_describe(exc)}")
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
            except (Exception, SystemExit) as exc:
                info.add_error(f"{hook} failed: {_describe(exc)}")
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
        """Let plugins add commands; replacing an existing one needs ``SUBBENCH_ALLOW_OVERRIDE=<plugin>``.

        A silent replacement of ``run`` would change what every experiment does, so it is
        undone and recorded as the plugin's load error.
        """
        allowed = set(_env_list("SUBBENCH_ALLOW_OVERRIDE") or [])
        for name in list(self.infos):
            plugin = self.pm.get_plugin(name)
            if plugin is None or not hasattr(plugin, "register_commands"):
                continue
            info = self.infos[name]
            commands = getattr(cli, "commands", {})
            before = dict(commands)
            started = time.perf_counter()
            try:
                plugin.register_commands(cli=cli)
            except (Exception, SystemExit) as exc:
                info.add_error(f"register_commands failed: {_describe(exc)}")
            info.load_seconds += time.perf_counter() - started
            replaced = sorted(c for c, cmd in before.items() if commands.get(c) is not cmd
                              and getattr(cmd, "_subbench_plugin", None) != name)
            refused = [c for c in replaced if name not in allowed]
            for c in refused:
                commands[c] = before[c]
            if refused:
                owners = ", ".join(f"{c} (from {getattr(before[c], '_subbench_plugin', None) or 'subbench'})" for c in refused)
                info.add_error(f"refused to replace the command(s) {owners}; "
                               f"set SUBBENCH_ALLOW_OVERRIDE={name} to allow it")
            info.overrides = sorted(set(info.overrides) | (set(replaced) - set(refused)))
            added = sorted(c for c, cmd in commands.items() if before.get(c) is not cmd)
            for c in added:
                try:
                    commands[c]._subbench_plugin = name
                except AttributeError:  # pragma: no cover
                    pass
            mine = sorted(c for c, cmd in commands.items() if getattr(cmd, "_subbench_plugin", None) == name)
            if mine:
                info.registered["commands"] = mine
        self.warn_slow()

    # -- lookups -----------------------------------------------------------------
    def registry(self, kind: str) -> Registry:
        return self.registries[kind]

    def get(self, kind: str, name: str):
        return self.registries[kind].get(name)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}) (the plugin called sys.exit)"
    return f"{type(exc).__name__}: {exc}"


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
