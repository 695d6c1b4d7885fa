"""Experiment files: loading (with ``include:``), ``--set`` overrides and validation.

An experiment is a YAML file in ``tasks/``. Every error names the file, the field and
what is allowed, and is raised as :class:`ConfigError` (exit code 2).
"""

from __future__ import annotations

import copy
import difflib
import functools
import itertools
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from subbench.components import OPEN_WEIGHTS, SEED_MAX, VOCABULARY, Param, ParamError, allow_large, declares, show
from subbench.errors import ConfigError, SubbenchError
from subbench.hashing import sha256_json

TOP_LEVEL = {
    "name": "experiment name (defaults to the file name)",
    "description": "free text",
    "include": "a file (or list) this one extends",
    "teacher": "{family, seed, params}, or a list of them (every teacher gets every student)",
    "trait": "{name, target, params}",
    "injector": "{name, params}; a list where the injector expects one value is a grid",
    "domain": "{name, size, params}",
    "mitigation": "{name, params} or null",
    "mitigations": "list of mitigations to score side by side ('none' for the unmitigated cells they are paired with)",
    "students": "list of {family, seed, params}",
    "distillers": "{name, params} or a list of them (the older key `distillation:` still works)",
    "distillation": "older name of distillers",
    "judge": "a judge name or {name, params}",
    "replicates": "{n, over: data|init, first}: how many replicates, and what each one draws anew",
    "seeds": "list of replicate seeds (older form of replicates)",
    "analysis": "{min_teacher_effect, bootstrap, bootstrap_seed}",
}
ANALYSIS_PARAMS = {
    "min_teacher_effect": Param(float, 0.05, "teacher effect below which a cell's transfer ratio is not reported",
                                min=0, max=1),
    "bootstrap": Param(int, 1000, "bootstrap resamples for the confidence intervals", min=100, max=100_000),
    "bootstrap_seed": Param(int, 0, "seed of the bootstrap resampling", min=0, max=SEED_MAX),
}
ANALYSIS_DEFAULTS = {k: p.default for k, p in ANALYSIS_PARAMS.items()}

#: Hard limits: an experiment past these is refused outright.
MAX_FILE_BYTES = 1 << 20      # one experiment or included file
MAX_YAML_NODES = 100_000      # YAML nodes after alias expansion ("billion laughs")
MAX_YAML_DEPTH = 64           # nesting of YAML collections
MAX_INCLUDE_DEPTH = 32        # include: chains
MAX_INCLUDED_FILES = 256      # files read for one experiment
MAX_SEEDS = 1000              # replicates
MAX_LIST = 100                # students, distillations, teachers
MAX_GRID = 10_000             # teacher settings (injector grid points)
DOMAIN_SIZE = Param(int, 1000, "samples generated per teacher", min=1, max=10_000_000)
SEED = Param(int, 0, "a replicate seed", min=0, max=SEED_MAX)
#: Soft limits on the run's estimated size; SUBBENCH_ALLOW_LARGE=1 lets a run past them.
SIZE_LIMITS = {
    "generated samples": 10_000_000,   # teacher settings (+ base) x replicates x domain size
    "student trainings": 5_000,        # cells x replicates
    "distilled samples": 100_000_000,  # cells x replicates x domain size
}
#: What a replicate draws anew: ``data`` = new injector, generation, subsampling and
#: distillation seeds on the same bases; ``init`` = also new base initialisations (the
#: teacher's seed is the replicate seed plus ``teacher.seed``, students relative to it).
REPLICATE_KINDS = ("data", "init")
#: ``domain.budget``: ``equal`` (teacher and control data cut to the smaller kept count) or a size.
BUDGET_DEFAULT = "equal"
SEED_RE = re.compile(r"^(seed|teacher)\s*(?:\+\s*(\d+))?$")
#: Renamed top-level keys, old -> new: the old key still works with a deprecation line on stderr.
RENAMED_KEYS = {"distillation": "distillers"}


def tasks_dirs() -> list[Path]:
    """Directories searched for an experiment by name (see :func:`subbench.resources.experiment_dirs`)."""
    from subbench.resources import experiment_dirs

    return [d for d, _ in experiment_dirs()]


def list_experiments(with_origin: bool = False) -> dict[str, Any]:
    """Experiment name -> file (or ``(file, origin)``), the first directory that has the name winning."""
    from subbench.resources import experiment_dirs

    found: dict[str, Any] = {}
    for d, origin in experiment_dirs():
        for p in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
            found.setdefault(p.stem, (p, origin) if with_origin else p)
    return found


def find_experiment(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not p.is_file():
            raise ConfigError(f"Experiment file {name_or_path} does not exist.")
        return p
    known = list_experiments()
    if name_or_path in known:
        return known[name_or_path]
    hint = difflib.get_close_matches(name_or_path, list(known), n=1)
    did = f" Did you mean: {hint[0]}?" if hint else ""
    raise ConfigError(
        f"Unknown experiment '{name_or_path}'.{did} Known: {', '.join(sorted(known)) or 'none'} "
        f"(see `subbench list experiments`)."
    )


@functools.lru_cache(maxsize=1)
def _bounded_loader():
    """A SafeLoader that refuses alias bombs, deep nesting and huge documents while composing.

    Sizes are counted on the node graph with every alias expanded, before any Python
    object is built, so "billion laughs" stops after a few thousand events with little
    memory. Floats also parse as YAML 1.2 does (``1e-4`` is a number, not a string).
    """
    import yaml
    from yaml.events import AliasEvent

    class Loader(yaml.SafeLoader):
        def __init__(self, stream):
            super().__init__(stream)
            self._sizes: dict[int, int] = {}
            self._depth = 0

        def compose_node(self, parent, index):
            if self.check_event(AliasEvent):
                return super().compose_node(parent, index)
            self._depth += 1
            if self._depth > MAX_YAML_DEPTH:
                raise ConfigError(f"nested deeper than {MAX_YAML_DEPTH} levels")
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
            if isinstance(node.value, list):
                size = 1
                for child in node.value:
                    for n in (child if isinstance(child, tuple) else (child,)):
                        size += self._sizes.get(id(n), 1)
                if size > MAX_YAML_NODES:
                    raise ConfigError(f"more than {MAX_YAML_NODES} values once its aliases are expanded")
                self._sizes[id(node)] = size
            return node

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return Loader


def parse_yaml(text: str, where: str) -> Any:
    """YAML text as data, with the size limits of :func:`_bounded_loader`; errors are ConfigError."""
    import yaml

    loader = _bounded_loader()(text)
    try:
        return loader.get_single_data()
    except ConfigError as exc:
        raise ConfigError(f"{where}: refused: the YAML is {exc}; simplify it.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}:{line} is not valid YAML ({getattr(exc, 'problem', None) or exc}).") from None
    except RecursionError:
        raise ConfigError(f"{where}: refused: the YAML is nested too deeply; simplify it.") from None
    finally:
        loader.dispose()


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: refused: {size} bytes is more than an experiment file may hold "
                              f"({MAX_FILE_BYTES}); experiment files are small YAML files.")
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.strerror or exc}).") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: refused: more than {MAX_FILE_BYTES} bytes; experiment files are small YAML files.")
    if b"\x00" in data:
        raise ConfigError(f"{path}: is a binary file, not a YAML experiment.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: is not UTF-8 text (byte {exc.start}); save the experiment as UTF-8.") from None


def _load_yaml(path: Path) -> dict[str, Any]:
    data = parse_yaml(_read_text(path), str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__} ({show(data)})"
        raise ConfigError(f"{path}: an experiment must be a mapping of fields (teacher:, trait:, ...), got {kind}.")
    return data


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_raw(path: Path, _seen: tuple[Path, ...] = (), _count: list[int] | None = None) -> dict[str, Any]:
    path = path.resolve()
    _count = [0] if _count is None else _count
    _count[0] += 1
    if path in _seen:
        raise ConfigError(f"{path}: include cycle ({' -> '.join(str(p) for p in _seen + (path,))}).")
    if len(_seen) >= MAX_INCLUDE_DEPTH:
        raise ConfigError(f"{_seen[0]}: include: chain deeper than {MAX_INCLUDE_DEPTH} files (at {path}); "
                          "include the shared file directly.")
    if _count[0] > MAX_INCLUDED_FILES:
        raise ConfigError(f"{_seen[0] if _seen else path}: include: more than {MAX_INCLUDED_FILES} files read; "
                          "include each shared file once.")
    data = _load_yaml(path)
    inc = data.pop("include", None)
    if inc is None:
        return data
    items = [inc] if isinstance(inc, str) else inc
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(f"{path}: include: expected a file name or a list of file names, got {show(inc)}.")
    if len(items) > MAX_LIST:
        raise ConfigError(f"{path}: include: expected at most {MAX_LIST} files, got {len(items)}.")
    merged: dict[str, Any] = {}
    for item in items:
        target = (path.parent / item).resolve()
        if not target.is_file():
            raise ConfigError(f"{path}: include: file {item} does not exist (looked in {path.parent}).")
        merged = _merge(merged, load_raw(target, _seen + (path,), _count))
    for old, new in RENAMED_KEYS.items():  # a file's key replaces the included one's under either name
        if old in data:
            merged.pop(new, None)
        if new in data:
            merged.pop(old, None)
    return _merge(merged, data)


def apply_overrides(raw: dict[str, Any], sets: list[str], where: str) -> dict[str, Any]:
    """Apply ``--set a.b.c=value`` (value parsed as YAML; numeric parts index lists)."""
    raw = copy.deepcopy(raw)
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key=value, e.g. --set domain.size=500.")
        key, value = item.split("=", 1)
        if len(value) > MAX_FILE_BYTES:
            raise ConfigError(f"--set {key}: refused: the value is longer than {MAX_FILE_BYTES} characters.")
        try:
            parsed = parse_yaml(value, f"--set {key}")
        except ConfigError as exc:
            if "refused" in str(exc):
                raise
            parsed = value
        parts = key.strip().split(".")
        for old, new in RENAMED_KEYS.items():  # --set under either name edits the key the file uses
            if parts[0] in (old, new):
                parts[0] = old if old in raw and new not in raw else new
                if parts[0] == new and key.strip().startswith(old):
                    _deprecated(old, new, f"--set {key.strip()}")
        node: Any = raw
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {key}: '{part}' is not an index of a list of {len(node)} items.")
                if last:
                    node[int(part)] = parsed
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = parsed
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise ConfigError(f"--set {key}: '{'.'.join(parts[:i])}' is a value, not a mapping.")
    return raw


@dataclass
class Spec:
    """One component named in an experiment: registry kind, component and resolved params."""

    kind: str
    component: Any
    params: dict[str, Any]
    label: str | None = None

    @property
    def name(self) -> str:
        return self.component.name

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.component.name, "version": self.component.version, "params": self.params}


@dataclass
class StudentSpec:
    family: Any  # None for ``family: teacher`` in a multi-teacher experiment until :meth:`Experiment.views` resolves it
    seed: int | str
    params: dict[str, Any]
    of_teacher: bool = False  # ``family: teacher``: the family of whichever teacher it is distilled from

    def resolve_seed(self, teacher_seed: int) -> int:
        return resolve_seed(self.seed, teacher=teacher_seed)

    def label(self) -> str:
        return f"{'teacher' if self.family is None else self.family.name}@{self.seed}"


@dataclass
class TeacherSpec:
    """One teacher of a multi-teacher experiment (``teacher:`` given as a list)."""

    family: Any
    seed: int | str
    params: dict[str, Any]
    label: str  # the family name, or ``family@seed`` (and a params tag) when two teachers share a family


@dataclass
class Experiment:
    name: str
    path: Path | None
    raw: dict[str, Any]
    teacher_family: Any
    teacher_seed: int | str
    teacher_params: dict[str, Any]
    trait: Spec
    target: str | None
    injector: Spec
    grid: list[dict[str, Any]]  # resolved injector params, one per teacher setting
    domain: Spec
    size: int
    mitigation: Spec | None
    students: list[StudentSpec]
    distillations: list[Spec]
    judge: Spec
    seeds: list[int]
    analysis: dict[str, Any]
    replicates: dict[str, Any] = field(default_factory=dict)
    budget: int | str = BUDGET_DEFAULT
    resolved: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # the file the experiment came from, as errors name it (a worker validates raw again)
    #: Every mitigation scored (None: unmitigated); ``[mitigation]`` for the single-key form.
    mitigations: list = field(default_factory=lambda: [None])
    #: ``teacher:`` given as a list: one per teacher (the fields above describe the first); [] otherwise.
    teachers: list[TeacherSpec] = field(default_factory=list)
    #: The teacher this view is of (its label) when it is one of :meth:`views`; None otherwise.
    teacher_label: str | None = None

    def views(self) -> list["Experiment"]:
        """One single-teacher experiment per teacher (``[self]`` for a single teacher), students resolved.

        A view shares everything with the experiment (name, resolved config and its hash)
        except the teacher fields, so each teacher's cells run exactly as a single-teacher
        experiment's would and their entries name the whole experiment's config.
        """
        import dataclasses

        if not self.teachers:
            return [self]
        out = []
        for t in self.teachers:
            students = teacher_students(t.family, self.students)
            out.append(dataclasses.replace(self, teacher_family=t.family, teacher_seed=t.seed, teacher_params=t.params,
                                           students=students, teachers=[], teacher_label=t.label))
        return out

    @property
    def config_hash(self) -> str:
        return "sha256:" + sha256_json(self.resolved)

    def teacher_seed_for(self, replicate: int) -> int:
        return resolve_seed(self.teacher_seed, seed=replicate)

    def cells(self) -> list[tuple[dict[str, Any], Spec, StudentSpec]]:
        return [(g, d, s) for g in self.grid for d in self.distillations for s in self.students]


def teacher_students(t_family: Any, students: list[StudentSpec]) -> list[StudentSpec]:
    """One teacher's students: ``family: teacher`` resolved to its family, a repeat of an earlier student dropped.

    With several teachers one list serves them all, so ``{family: teacher, seed: teacher}``
    and ``{family: tiny-llama, seed: teacher}`` are the same student for the tiny-llama
    teacher (it runs once) and different ones for the others.
    """
    out, seen = [], set()
    for s in students:
        if s.of_teacher:
            s = StudentSpec(t_family, s.seed, s.params[t_family.name])
        sig = sha256_json([s.family.name, resolve_seed(s.seed, teacher=0), resolve_seed(s.seed, teacher=1), s.params])
        if sig not in seen:
            seen.add(sig)
            out.append(s)
    return out


def resolve_seed(value: int | str, *, seed: int | None = None, teacher: int | None = None) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    m = SEED_RE.match(str(value).strip())
    if not m:
        raise ValueError(value)
    base = {"seed": seed, "teacher": teacher}[m.group(1)]
    if base is None:
        raise ValueError(value)
    return base + int(m.group(2) or 0)


class _Validator:
    def __init__(self, where: str, pm):
        self.where = where
        self.pm = pm

    def fail(self, field_: str, msg: str):
        raise ConfigError(f"{self.where}: {field_}: {msg}")

    def check(self, fn, field_: str, *args) -> None:
        """Run a component's optional check (None: nothing to check); its error names ``field_``."""
        if callable(fn):
            try:
                fn(*args)
            except SubbenchError as exc:
                self.fail(field_, str(exc))

    def mapping(self, raw: dict, field_: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
        value = raw.get(field_)
        if not isinstance(value, dict):
            self.fail(field_, f"expected a mapping with {', '.join(sorted(allowed))}; got {value!r}.")
        return self.keys(value, field_, allowed, required)

    def keys(self, value: dict, field_: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
        for k in value:
            if k not in allowed:
                hint = difflib.get_close_matches(str(k), sorted(allowed), n=1)
                did = f" Did you mean: {hint[0]}?" if hint else ""
                self.fail(f"{field_}.{k}", f"unknown field.{did} Allowed: {', '.join(sorted(allowed))}.")
        for k in sorted(required):
            if value.get(k) in (None, ""):
                self.fail(f"{field_}.{k}", "is required.")
        return value

    def component(self, kind: str, name: Any, field_: str):
        if not isinstance(name, str):
            self.fail(field_, f"expected a {kind[:-1]} name, got {name!r}.")
        try:
            return self.pm.get(kind, name)
        except SubbenchError as exc:
            msg = str(exc)
            if kind == "families" and "Did you mean" not in msg:
                msg += (" A family from a plugin needs the plugin installed: `subbench install PKG_OR_PATH` "
                        "(a package name, or `-e DIR` for a plugin's source folder).")
            self.fail(field_, msg)

    def params(self, component, params: Any, field_: str) -> dict:
        if params is None:
            params = {}
        if not isinstance(params, dict):
            self.fail(field_, f"expected a mapping of parameters, got {params!r}.")
        try:
            return component.resolve_params(params)
        except ParamError as exc:
            self.fail(f"{field_}.{exc.param}", exc.detail)
        except ConfigError as exc:
            self.fail(field_, str(exc))

    def value(self, param: Param, value: Any, field_: str) -> Any:
        try:
            param.check(value, field_)
        except ParamError as exc:
            self.fail(exc.param, exc.detail)
        return value

    def bounded_list(self, value: Any, field_: str, limit: int) -> None:
        if isinstance(value, list) and len(value) > limit:
            self.fail(field_, f"expected at most {limit} items, got {len(value)}.")

    def spec(self, kind: str, value: Any, field_: str, extra: set[str] = frozenset()) -> tuple[Spec, dict]:
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            self.fail(field_, f"expected a name or {{name, params}}, got {value!r}.")
        self.keys(value, field_, {"name", "params"} | set(extra), {"name"})
        comp = self.component(kind, value["name"], f"{field_}.name")
        params = self.params(comp, value.get("params"), f"{field_}.params")
        return Spec(kind, comp, params), value

    def seed(self, value: Any, field_: str, allowed: str) -> int | str:
        try:
            offset = resolve_seed(value, seed=0, teacher=0)
        except (ValueError, TypeError):
            self.fail(field_, f"expected an integer in [0, {SEED_MAX}] or {allowed}, got {show(value)}.")
        if not 0 <= offset <= SEED_MAX:
            self.fail(field_, f"expected an integer in [0, {SEED_MAX}] or {allowed}, got {show(value)}.")
        return value


def _check_mitigations(v, mitigations: list, distillations: list, t_family) -> None:
    """Each defence's point is known, a training override stays valid, activations need open weights."""
    from subbench.components import MITIGATION_POINTS, ParamError

    for i, m in enumerate(mitigations):
        if m is None:
            continue
        point = getattr(m.component, "point", "data")
        where = f"mitigations[{i}]" if len(mitigations) > 1 or m is not mitigations[0] else "mitigation"
        if point not in MITIGATION_POINTS:
            v.fail(f"{where}.name", f"mitigation '{m.name}' declares point {point!r}; a plugin must use one of "
                   f"{', '.join(MITIGATION_POINTS)}.")
        needs = point == "activations" or declares(m.component, "requires", OPEN_WEIGHTS)
        if needs and not declares(t_family, "provides", OPEN_WEIGHTS):
            v.fail(f"{where}.name", f"mitigation '{m.name}' needs the teacher's weights or logits, but family "
                   f"'{t_family.name}' is text-only; use a data or training defence.")
        if point == "training":
            for d in distillations:
                try:
                    d.component.resolve_params(m.component.train_params(d.component, d.params, m.params))
                except (ParamError, ConfigError) as exc:
                    v.fail(f"{where}.name", f"mitigation '{m.name}' cannot apply to distiller '{d.name}': {exc}")


_WARNED: set[str] = set()
#: Deprecation lines held back until the experiment validates, so a refused one still ends in one line.
_PENDING: list[str] = []


def _deprecated(old: str, new: str, where: str) -> None:
    _PENDING.append(f"subbench: {where}: `{old}` is now called `{new}`; the old name still works for now.")


def _flush_deprecations() -> None:
    for line in dict.fromkeys(_PENDING):
        if line not in _WARNED:
            _WARNED.add(line)
            print(line, file=sys.stderr, flush=True)
    _PENDING.clear()


def validate(raw: dict[str, Any], where: str, pm=None) -> Experiment:
    from subbench.plugins import get_manager

    pm = pm or get_manager()
    v = _Validator(where, pm)
    if "distillation" in raw and "distillers" in raw:
        v.fail("distillers", "give distillers or distillation (its older name), not both.")
    # error messages name the key the file uses
    dkey = "distillation" if "distillation" in raw else "distillers"
    if dkey == "distillation":
        _deprecated("distillation:", "distillers:", where)
    v.keys(raw, "experiment", set(TOP_LEVEL), {"teacher", "trait", "injector", "domain", "students", dkey})

    t_list = _teachers(v, raw)
    multi = isinstance(raw["teacher"], list)
    t_family, t_seed, t_params = t_list[0].family, t_list[0].seed, t_list[0].params

    trait_raw = raw["trait"]
    trait, trait_raw = v.spec("traits", trait_raw, "trait", {"target"})
    target = trait_raw.get("target")
    v.check(getattr(trait.component, "check_target", None), "trait.target", target, trait.params)

    inj_raw = raw["injector"]
    if isinstance(inj_raw, str):
        inj_raw = {"name": inj_raw}
    if not isinstance(inj_raw, dict):
        v.fail("injector", f"expected a name or {{name, params}}, got {inj_raw!r}.")
    v.keys(inj_raw, "injector", {"name", "params"}, {"name"})
    injector = v.component("injectors", inj_raw["name"], "injector.name")
    given = inj_raw.get("params")
    if given is not None and not isinstance(given, dict):
        v.fail("injector.params", f"expected a mapping of parameters, got {show(given)}.")
    given = dict(given or {})
    specs = injector.param_specs()
    axes = {k: val for k, val in given.items()
            if isinstance(val, list) and not (k in specs and list in specs[k].types)}
    points = 1
    for k, val in axes.items():
        if not val:
            v.fail(f"injector.params.{k}", "an empty list gives no teacher setting.")
        points *= len(val)
        if points > MAX_GRID:
            v.fail("injector.params", f"the grid has more than {MAX_GRID} teacher settings; sweep fewer values.")
    grid = []
    for combo in itertools.product(*axes.values()) if axes else [()]:
        p = dict(given)
        p.update(dict(zip(axes, combo)))
        grid.append(v.params(injector, p, "injector.params"))
    injector_spec = Spec("injectors", injector, v.params(injector, {k: val for k, val in given.items() if k not in axes}, "injector.params"))

    dom_raw = raw["domain"]
    domain, dom_raw = v.spec("domains", dom_raw, "domain", {"size", "budget"})
    if getattr(domain.component, "uses_trait_words", False) and domain.params.get("trait_words") is None:
        # free-text domains refuse the trait's own words; the trait names them (part of the keys)
        domain.params["trait_words"] = list(trait.component.trait_words(target, trait.params))
    size = v.value(DOMAIN_SIZE, dom_raw.get("size", DOMAIN_SIZE.default), "domain.size")
    budget = dom_raw.get("budget", BUDGET_DEFAULT)
    if budget != BUDGET_DEFAULT:
        if not isinstance(budget, int) or isinstance(budget, bool):
            v.fail("domain.budget", f"expected 'equal' (teacher and control data cut to the smaller kept count) "
                   f"or a positive number of training samples, got {show(budget)}.")
        v.value(DOMAIN_SIZE, budget, "domain.budget")

    mitigation = None
    if raw.get("mitigation") is not None:
        mitigation, _ = v.spec("mitigations", raw["mitigation"], "mitigation")
    mitigations: list = [mitigation]
    if raw.get("mitigations") is not None:
        if raw.get("mitigation") is not None:
            v.fail("mitigations", "give either `mitigation:` (one defence) or `mitigations:` (a list), not both.")
        mit_raw = raw["mitigations"]
        if not isinstance(mit_raw, list) or not mit_raw:
            v.fail("mitigations", "expected a non-empty list of mitigation names or {name, params}, 'none' included "
                   "for the unmitigated cells they are compared with.")
        v.bounded_list(mit_raw, "mitigations", MAX_LIST)
        mitigations = []
        for i, m in enumerate(mit_raw):
            if m is None or m == "none" or (isinstance(m, dict) and m.get("name") == "none" and not m.get("params")):
                mitigations.append(None)
            else:
                mitigations.append(v.spec("mitigations", m, f"mitigations[{i}]")[0])
        seen_m = [json.dumps(None if m is None else m.as_dict(), sort_keys=True) for m in mitigations]
        if len(set(seen_m)) != len(seen_m):
            v.fail("mitigations", "lists one mitigation (same name and params) twice; drop the repeat.")

    students_raw = raw["students"]
    if not isinstance(students_raw, list) or not students_raw:
        v.fail("students", "expected a non-empty list of {family, seed, params}.")
    v.bounded_list(students_raw, "students", MAX_LIST)
    students = []
    for i, s in enumerate(students_raw):
        f = f"students[{i}]"
        if isinstance(s, str):
            s = {"family": s}
        if not isinstance(s, dict):
            v.fail(f, f"expected {{family, seed, params}}, got {s!r}.")
        v.keys(s, f, {"family", "seed", "params"}, {"family"})
        seed = v.seed(s.get("seed", "teacher"), f"{f}.seed", "'teacher' / 'teacher+N'")
        if isinstance(seed, str) and seed.strip().startswith("seed"):
            v.fail(f"{f}.seed", "use 'teacher' or 'teacher+N' (relative to the teacher's initialisation) or an integer.")
        if s["family"] == "teacher":  # the teacher's own family: params checked against each teacher's family
            by_family = {t.family.name: v.params(t.family, s.get("params"), f"{f}.params") for t in t_list}
            if multi:
                students.append(StudentSpec(None, seed, by_family, of_teacher=True))
            else:
                students.append(StudentSpec(t_family, seed, by_family[t_family.name]))
            continue
        fam = v.component("families", s["family"], f"{f}.family")
        students.append(StudentSpec(fam, seed, v.params(fam, s.get("params"), f"{f}.params")))

    d_raw = raw[dkey]
    d_list = d_raw if isinstance(d_raw, list) else [d_raw]
    if not d_list:
        v.fail(dkey, "expected at least one {name, params}.")
    v.bounded_list(d_list, dkey, MAX_LIST)
    distillations = []
    for i, d in enumerate(d_list):
        spec, d_raw = v.spec("distillers", d, f"{dkey}[{i}]", {"label"})
        label = d_raw.get("label")
        if label is not None and (not isinstance(label, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$", label)):
            v.fail(f"{dkey}[{i}].label", f"expected letters, digits and . _ = , + -, got {label!r}.")
        spec.label = label
        distillations.append(spec)
    labels = [d.label for d in distillations if d.label]
    if len(set(labels)) != len(labels):
        v.fail(dkey, "two distillations share a label.")

    judge_raw = raw.get("judge") or trait.component.default_judge
    if not judge_raw:
        v.fail("judge", f"trait '{trait.name}' has no default judge; name one.")
    judge, _ = v.spec("judges", judge_raw, "judge")
    allowed_judges = getattr(trait.component, "judges", ()) or ()
    if allowed_judges and judge.name not in allowed_judges and not getattr(judge.component, "combines", False):
        v.fail("judge.name", f"trait '{trait.name}' can be judged by {', '.join(allowed_judges)}, not '{judge.name}'.")

    seeds, t_seed, replicates = _replicates(v, raw, t_seed)
    for t in t_list:
        _, t.seed, _ = _replicates(v, raw, t.seed)

    analysis = dict(ANALYSIS_DEFAULTS)
    if raw.get("analysis") is not None:
        a = raw["analysis"]
        if not isinstance(a, dict):
            v.fail("analysis", f"expected a mapping with {', '.join(ANALYSIS_PARAMS)}, got {show(a)}.")
        v.keys(a, "analysis", set(ANALYSIS_DEFAULTS))
        for k, val in a.items():
            v.value(ANALYSIS_PARAMS[k], val, f"analysis.{k}")
        analysis.update(a)

    def check_teacher(t_family, t_seed, t_params, students):
        """Everything that depends on the teacher, once per teacher."""
        _check_mitigations(v, mitigations, distillations, t_family)
        # seeds that only exist relative to a replicate must stay in range for every replicate
        for replicate in seeds:
            t = resolve_seed(t_seed, seed=replicate)
            if t > SEED_MAX:
                v.fail("teacher.seed", f"'{t_seed}' gives {t} for replicate {replicate}, past {SEED_MAX}; use smaller seeds.")
            for i, st in enumerate(students):
                if st.resolve_seed(t) > SEED_MAX:
                    v.fail(f"students[{i}].seed", f"'{st.seed}' gives {st.resolve_seed(t)} for replicate {replicate}, "
                           f"past {SEED_MAX}; use smaller seeds.")

        # every component must speak the same modality
        modality = t_family.modality
        for label, comp in [("trait", trait.component), ("injector", injector), ("domain", domain.component)] + [
            (f"{dkey}[{i}]", d.component) for i, d in enumerate(distillations)
        ] + [(f"students[{i}]", s.family) for i, s in enumerate(students)]:
            if comp.modality != modality:
                v.fail(label, f"'{comp.name}' works on {comp.modality} models, but teacher family '{t_family.name}' is {modality}.")

        check_students_and_domain(v, t_family, domain, students)
        if declares(injector, "requires", OPEN_WEIGHTS) and not declares(t_family, "provides", OPEN_WEIGHTS):
            v.fail("injector.name", f"'{injector.name}' needs the teacher's weights, but family '{t_family.name}' is "
                   "text-only (an API endpoint); use the system-prompt injector or an open-weight family.")

        # pairs that cannot be distilled are refused before any work starts
        from subbench.components import ModelRef

        t_ref = ModelRef(t_family, Path("."), {"params": t_params})
        for i, d in enumerate(distillations):
            for j, s in enumerate(students):
                try:
                    d.component.check(t_ref, ModelRef(s.family, Path("."), {"params": s.params}), injector)
                except SubbenchError as exc:
                    v.fail(f"{dkey}[{i}] with students[{j}]", str(exc))
                problem = capability_gap(d.component, (t_family, t_params), (s.family, s.params), injector,
                                         domain.component)
                if problem:
                    v.fail(f"{dkey}[{i}] with students[{j}]", problem)

    if multi:  # a student named twice is a mistake; ``family: teacher`` repeating one is not (teacher_students)
        check_students_and_domain(v, t_family, domain, [s for s in students if not s.of_teacher])
    for t in t_list:
        check_teacher(t.family, t.seed, t.params, teacher_students(t.family, students) if multi else students)

    check_size(where, estimate_size(len(grid) * len(t_list), len(distillations) * len(students), len(seeds), size))

    name = raw.get("name") or (Path(where).stem if where else "experiment")
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
        v.fail("name", f"expected letters, digits, '.', '_' or '-', got {name!r}.")

    exp = Experiment(
        name=name,
        path=None,
        raw=raw,
        where=where,
        teacher_family=t_family,
        teacher_seed=t_seed,
        teacher_params=t_params,
        trait=trait,
        target=target,
        injector=injector_spec,
        grid=grid,
        domain=domain,
        size=size,
        mitigation=mitigation,
        mitigations=mitigations,
        students=students,
        distillations=distillations,
        judge=judge,
        seeds=list(seeds),
        analysis=analysis,
        replicates=replicates,
        budget=budget,
        teachers=t_list if multi else [],
    )
    _flush_deprecations()
    exp.resolved = {
        "name": name,
        "teacher": ([{"family": t.family.name, "seed": t.seed, "params": t.params} for t in t_list] if multi
                    else {"family": t_family.name, "seed": t_seed, "params": t_params}),
        "trait": {**trait.as_dict(), "target": target},
        "injector": {"name": injector.name, "version": injector.version, "grid": grid},
        "domain": {**domain.as_dict(), "size": size, "budget": budget},
        "mitigation": mitigation.as_dict() if mitigation else None,
        **({"mitigations": [m.as_dict() if m else None for m in mitigations]} if raw.get("mitigations") is not None else {}),
        "students": [{"family": "teacher" if s.of_teacher else s.family.name, "seed": s.seed, "params": s.params}
                     for s in students],
        # the resolved config keeps the key `distillation`: it is hashed (config_hash) and in every entry
        "distillation": [{**d.as_dict(), **({"label": d.label} if d.label else {})} for d in distillations],
        "judge": judge.as_dict(),
        "seeds": list(seeds),
        "replicates": replicates,
        "analysis": analysis,
    }
    return exp


def _teachers(v: "_Validator", raw: dict[str, Any]) -> list[TeacherSpec]:
    """``teacher:`` as one mapping or a list of them; two teachers may not be the same model."""
    given = raw["teacher"]
    if isinstance(given, list):
        if not given:
            v.fail("teacher", "expected a non-empty list of {family, seed, params}.")
        v.bounded_list(given, "teacher", MAX_LIST)
        fields = [f"teacher[{i}]" for i in range(len(given))]
    else:
        given, fields = [given], ["teacher"]
    out = []
    for f, t in zip(fields, given):
        if not isinstance(t, dict):
            v.fail(f, f"expected a mapping with family, params, seed; got {t!r}.")
        v.keys(t, f, {"family", "seed", "params"}, {"family"})
        fam = v.component("families", t["family"], f"{f}.family")
        seed = v.seed(t.get("seed", 0), f"{f}.seed", "'seed' / 'seed+N' (the replicate seed)")
        out.append(TeacherSpec(fam, seed, v.params(fam, t.get("params"), f"{f}.params"), fam.name))
    seen: dict[str, int] = {}
    for i, t in enumerate(out):
        sig = sha256_json([t.family.name, str(t.seed), t.params])
        if sig in seen:
            v.fail(fields[i], f"is the same teacher as {fields[seen[sig]]} (family, seed and params); remove one.")
        seen[sig] = i
    names = [t.family.name for t in out]
    for t in out:
        if names.count(t.family.name) > 1:
            try:
                defaults = t.family.resolve_params({})
            except Exception:  # a family without usable defaults (a hub family needs its model id)
                defaults = None
            tag = "" if t.params == defaults else "-p" + sha256_json(t.params)[:6]
            t.label = f"{t.family.name}@{t.seed}{tag}"
    return out


def _replicates(v: "_Validator", raw: dict[str, Any], t_seed: int | str) -> tuple[list[int], int | str, dict[str, Any]]:
    """The replicate seeds, the teacher's seed rule and ``{n, over}`` from ``replicates:`` or ``seeds:``."""
    relative = isinstance(t_seed, str)
    if raw.get("replicates") is not None:
        if raw.get("seeds") is not None:
            v.fail("replicates", "give either replicates or seeds, not both.")
        rep = raw["replicates"]
        if isinstance(rep, int) and not isinstance(rep, bool):
            rep = {"n": rep}
        if not isinstance(rep, dict):
            v.fail("replicates", f"expected {{n, over: data|init}} or a number, got {rep!r}.")
        v.keys(rep, "replicates", {"n", "over", "first"}, {"n"})
        n, over, first = rep["n"], rep.get("over", "data"), rep.get("first", 0)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_SEEDS:
            v.fail("replicates.n", f"expected a whole number from 1 to {MAX_SEEDS}, got {show(n)}.")
        if over not in REPLICATE_KINDS:
            v.fail("replicates.over", f"expected one of {', '.join(REPLICATE_KINDS)} (new data and training seeds on the "
                   f"same bases, or new base initialisations), got {over!r}.")
        v.value(SEED, first, "replicates.first")
        v.value(SEED, first + n - 1, "replicates.first")
        if relative:
            v.fail("teacher.seed", "with replicates:, give the teacher's seed as an integer (over: init adds the "
                   "replicate seed to it).")
        seeds = list(range(first, first + n))
        if over == "init":
            t_seed = "seed" if t_seed == 0 else f"seed+{t_seed}"
        return seeds, t_seed, {"n": n, "over": over}
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds:
        v.fail("seeds", f"expected a non-empty list of integers in [0, {SEED_MAX}], got {show(seeds)}.")
    v.bounded_list(seeds, "seeds", MAX_SEEDS)
    for i, s_ in enumerate(seeds):
        v.value(SEED, s_, f"seeds[{i}]")
    if len(set(seeds)) != len(seeds):
        v.fail("seeds", "contains duplicates.")
    return seeds, t_seed, {"n": len(seeds), "over": "init" if relative else "data"}


def estimate_size(teacher_settings: int, cells_per_setting: int, replicates: int, domain_size: int) -> dict[str, int]:
    """How much work a run is, in the units of :data:`SIZE_LIMITS` (upper bounds: nothing cached)."""
    cells = teacher_settings * cells_per_setting
    return {
        "generated samples": (teacher_settings + 1) * replicates * domain_size,
        "student trainings": cells * replicates,
        "distilled samples": cells * replicates * domain_size,
    }


def check_size(where: str, estimate: dict[str, int]) -> None:
    """Refuse an absurd run unless SUBBENCH_ALLOW_LARGE=1 says it is meant."""
    for what, n in estimate.items():
        if n > SIZE_LIMITS[what] and not allow_large():
            raise ConfigError(
                f"{where}: refused: the run needs about {n:,} {what} (limit {SIZE_LIMITS[what]:,}); shrink seeds, "
                "domain.size or the grid, or set SUBBENCH_ALLOW_LARGE=1 to run it anyway."
            )


def load_experiment(name_or_path: str, sets: list[str] | None = None, pm=None) -> Experiment:
    path = find_experiment(name_or_path)
    where = _display(path)
    _PENDING.clear()
    raw = apply_overrides(load_raw(path), list(sets or []), where)
    exp = validate(raw, where, pm)
    exp.path = path
    return exp


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_students_and_domain(v: "_Validator", t_family: Any, domain: Spec, students: list[StudentSpec]) -> None:
    """Refuse identical students (their cells would be one file) and domain options the teacher cannot serve."""
    seen: dict[str, int] = {}
    for i, s in enumerate(students):
        sig = sha256_json([s.family.name, resolve_seed(s.seed, teacher=0), resolve_seed(s.seed, teacher=1), s.params])
        if sig in seen:
            v.fail(f"students[{i}]", f"is the same student as students[{seen[sig]}] (family, seed and params); "
                   "remove one or change its seed or params.")
        seen[sig] = i
    v.check(getattr(domain.component, "check_teacher", None), "domain.params", t_family, domain.params)




def capability_gap(distiller: Any, teacher: tuple[Any, dict], student: tuple[Any, dict], injector: Any,
                   domain: Any) -> str | None:
    """What the distiller ``requires`` that the teacher, student, injector or domain does not provide, as one sentence.

    Runs after the distiller's own ``check``, so its own wording wins; this covers a plugin
    that only declares.
    """
    requires = getattr(distiller, "requires", None) or frozenset()
    name = distiller.name
    if OPEN_WEIGHTS in requires:
        for fam, _ in (teacher, student):
            if not declares(fam, "provides", OPEN_WEIGHTS):
                return (f"distiller '{name}' requires open weights, but family '{fam.name}' is text-only; "
                        "use a distiller that does not (sft).")
        if not declares(injector, "provides", OPEN_WEIGHTS):
            return (f"distiller '{name}' requires open weights, but injector '{injector.name}' makes a text-only "
                    "teacher; use another injector or distiller.")
    if VOCABULARY in requires:
        vt, vs = teacher[0].vocabulary_of(teacher[1]), student[0].vocabulary_of(student[1])
        if vt is None or vs is None or vt != vs:
            return (f"distiller '{name}' requires teacher and student to share a vocabulary, but {teacher[0].name} "
                    f"uses {vt or 'an unknown one'} and {student[0].name} uses {vs or 'an unknown one'}; "
                    "pick students of the teacher's vocabulary or another distiller.")
    kinds = sorted(c for c in requires if c.startswith("records:"))
    missing = [c for c in kinds if not declares(domain, "provides", c)]
    if missing:
        wanted = ", ".join(c.split(":", 1)[1] for c in missing)
        return (f"distiller '{name}' trains on {wanted} records, which domain '{domain.name}' does not write; "
                "use a domain that provides them.")
    return None
