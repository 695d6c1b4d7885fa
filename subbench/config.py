"""Experiment files: loading (with ``include:``), ``--set`` overrides and validation.

An experiment is a YAML file in ``tasks/``. Every error names the file, the field and
what is allowed, and is raised as :class:`ConfigError` (exit code 2).
"""

from __future__ import annotations

import copy
import difflib
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from subbench.errors import ConfigError, SubbenchError
from subbench.hashing import sha256_json

TOP_LEVEL = {
    "name": "experiment name (defaults to the file name)",
    "description": "free text",
    "include": "a file (or list) this one extends",
    "teacher": "{family, seed, params}",
    "trait": "{name, target, params}",
    "injector": "{name, params}; a list where the injector expects one value is a grid",
    "domain": "{name, size, params}",
    "mitigation": "{name, params} or null",
    "students": "list of {family, seed, params}",
    "distillation": "{name, params} or a list of them",
    "judge": "a judge name or {name, params}",
    "replicates": "{n, over: data|init, first}: how many replicates, and what each one draws anew",
    "seeds": "list of replicate seeds (older form of replicates)",
    "analysis": "{min_teacher_effect, bootstrap, bootstrap_seed}",
}
ANALYSIS_DEFAULTS = {"min_teacher_effect": 0.05, "bootstrap": 1000, "bootstrap_seed": 0}
#: What a replicate draws anew: ``data`` = new injector, generation, subsampling and
#: distillation seeds on the same bases; ``init`` = also new base initialisations (the
#: teacher's seed is the replicate seed plus ``teacher.seed``, students relative to it).
REPLICATE_KINDS = ("data", "init")
#: ``domain.budget``: ``equal`` (teacher and control data cut to the smaller kept count) or a size.
BUDGET_DEFAULT = "equal"
SEED_RE = re.compile(r"^(seed|teacher)\s*(?:\+\s*(\d+))?$")


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def tasks_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("SUBBENCH_TASKS"):
        dirs += [Path(p) for p in os.environ["SUBBENCH_TASKS"].split(os.pathsep) if p]
    dirs += [Path.cwd() / "tasks", repo_root() / "tasks"]
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def list_experiments() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in tasks_dirs():
        for p in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
            found.setdefault(p.stem, p)
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


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)}).") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an experiment must be a mapping of fields, got {type(data).__name__}.")
    return data


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_raw(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"{path}: include cycle ({' -> '.join(str(p) for p in _seen + (path,))}).")
    data = _load_yaml(path)
    inc = data.pop("include", None)
    if inc is None:
        return data
    merged: dict[str, Any] = {}
    for item in [inc] if isinstance(inc, str) else list(inc):
        target = (path.parent / str(item)).resolve()
        if not target.is_file():
            raise ConfigError(f"{path}: include: file {item} does not exist (looked in {path.parent}).")
        merged = _merge(merged, load_raw(target, _seen + (path,)))
    return _merge(merged, data)


def apply_overrides(raw: dict[str, Any], sets: list[str], where: str) -> dict[str, Any]:
    """Apply ``--set a.b.c=value`` (value parsed as YAML; numeric parts index lists)."""
    import yaml

    raw = copy.deepcopy(raw)
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key=value, e.g. --set domain.size=500.")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        parts = key.strip().split(".")
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
    family: Any
    seed: int | str
    params: dict[str, Any]

    def resolve_seed(self, teacher_seed: int) -> int:
        return resolve_seed(self.seed, teacher=teacher_seed)

    def label(self) -> str:
        return f"{self.family.name}@{self.seed}"


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

    @property
    def config_hash(self) -> str:
        return "sha256:" + sha256_json(self.resolved)

    def teacher_seed_for(self, replicate: int) -> int:
        return resolve_seed(self.teacher_seed, seed=replicate)

    def cells(self) -> list[tuple[dict[str, Any], Spec, StudentSpec]]:
        return [(g, d, s) for g in self.grid for d in self.distillations for s in self.students]


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
                msg += " A family from a plugin needs the plugin installed: `subbench install PKG_OR_PATH` (e.g. -e plugins/subbench-qwen25)."
            self.fail(field_, msg)

    def params(self, component, params: Any, field_: str) -> dict:
        if params is None:
            params = {}
        if not isinstance(params, dict):
            self.fail(field_, f"expected a mapping of parameters, got {params!r}.")
        try:
            return component.resolve_params(params)
        except ConfigError as exc:
            self.fail(field_, str(exc))

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
            resolve_seed(value, seed=0, teacher=0)
        except (ValueError, TypeError):
            self.fail(field_, f"expected an integer or {allowed}, got {value!r}.")
        return value


def validate(raw: dict[str, Any], where: str, pm=None) -> Experiment:
    from subbench.plugins import get_manager

    pm = pm or get_manager()
    v = _Validator(where, pm)
    v.keys(raw, "experiment", set(TOP_LEVEL), {"teacher", "trait", "injector", "domain", "students", "distillation"})

    teacher = v.mapping(raw, "teacher", {"family", "seed", "params"}, {"family"})
    t_family = v.component("families", teacher["family"], "teacher.family")
    t_seed = v.seed(teacher.get("seed", 0), "teacher.seed", "'seed' / 'seed+N' (the replicate seed)")
    t_params = v.params(t_family, teacher.get("params"), "teacher.params")

    trait_raw = raw["trait"]
    trait, trait_raw = v.spec("traits", trait_raw, "trait", {"target"})
    target = trait_raw.get("target")
    check_target = getattr(trait.component, "check_target", None)
    if callable(check_target):
        try:
            check_target(target, trait.params)
        except SubbenchError as exc:
            v.fail("trait.target", str(exc))

    inj_raw = raw["injector"]
    if isinstance(inj_raw, str):
        inj_raw = {"name": inj_raw}
    if not isinstance(inj_raw, dict):
        v.fail("injector", f"expected a name or {{name, params}}, got {inj_raw!r}.")
    v.keys(inj_raw, "injector", {"name", "params"}, {"name"})
    injector = v.component("injectors", inj_raw["name"], "injector.name")
    given = dict(inj_raw.get("params") or {})
    axes = {k: val for k, val in given.items() if isinstance(val, list) and not isinstance(injector.defaults.get(k), list)}
    for k, val in axes.items():
        if not val:
            v.fail(f"injector.params.{k}", "an empty list gives no teacher setting.")
    grid = []
    for combo in itertools.product(*axes.values()) if axes else [()]:
        p = dict(given)
        p.update(dict(zip(axes, combo)))
        grid.append(v.params(injector, p, "injector.params"))
    injector_spec = Spec("injectors", injector, v.params(injector, {k: val for k, val in given.items() if k not in axes}, "injector.params"))

    dom_raw = raw["domain"]
    domain, dom_raw = v.spec("domains", dom_raw, "domain", {"size", "budget"})
    size = dom_raw.get("size", 1000)
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        v.fail("domain.size", f"expected a positive integer, got {size!r}.")
    budget = dom_raw.get("budget", BUDGET_DEFAULT)
    if budget != BUDGET_DEFAULT and (not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0):
        v.fail("domain.budget", f"expected 'equal' (teacher and control data cut to the smaller kept count) "
               f"or a positive number of training samples, got {budget!r}.")

    mitigation = None
    if raw.get("mitigation") is not None:
        mitigation, _ = v.spec("mitigations", raw["mitigation"], "mitigation")

    students_raw = raw["students"]
    if not isinstance(students_raw, list) or not students_raw:
        v.fail("students", "expected a non-empty list of {family, seed, params}.")
    students = []
    for i, s in enumerate(students_raw):
        f = f"students[{i}]"
        if isinstance(s, str):
            s = {"family": s}
        if not isinstance(s, dict):
            v.fail(f, f"expected {{family, seed, params}}, got {s!r}.")
        v.keys(s, f, {"family", "seed", "params"}, {"family"})
        fam = v.component("families", s["family"], f"{f}.family")
        seed = v.seed(s.get("seed", "teacher"), f"{f}.seed", "'teacher' / 'teacher+N'")
        if isinstance(seed, str) and seed.strip().startswith("seed"):
            v.fail(f"{f}.seed", "use 'teacher' or 'teacher+N' (relative to the teacher's initialisation) or an integer.")
        students.append(StudentSpec(fam, seed, v.params(fam, s.get("params"), f"{f}.params")))

    d_raw = raw["distillation"]
    d_list = d_raw if isinstance(d_raw, list) else [d_raw]
    if not d_list:
        v.fail("distillation", "expected at least one {name, params}.")
    distillations = []
    for i, d in enumerate(d_list):
        spec, d_raw = v.spec("distillers", d, f"distillation[{i}]", {"label"})
        label = d_raw.get("label")
        if label is not None and (not isinstance(label, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$", label)):
            v.fail(f"distillation[{i}].label", f"expected letters, digits and . _ = , + -, got {label!r}.")
        spec.label = label
        distillations.append(spec)
    labels = [d.label for d in distillations if d.label]
    if len(set(labels)) != len(labels):
        v.fail("distillation", "two distillations share a label.")

    judge_raw = raw.get("judge") or trait.component.default_judge
    if not judge_raw:
        v.fail("judge", f"trait '{trait.name}' has no default judge; name one.")
    judge, _ = v.spec("judges", judge_raw, "judge")
    allowed_judges = getattr(trait.component, "judges", ()) or ()
    if allowed_judges and judge.name not in allowed_judges and not getattr(judge.component, "is_ensemble", False):
        v.fail("judge.name", f"trait '{trait.name}' can be judged by {', '.join(allowed_judges)}, not '{judge.name}'.")

    seeds, t_seed, replicates = _replicates(v, raw, t_seed)

    analysis = dict(ANALYSIS_DEFAULTS)
    if raw.get("analysis") is not None:
        a = raw["analysis"]
        if not isinstance(a, dict):
            v.fail("analysis", "expected a mapping.")
        v.keys(a, "analysis", set(ANALYSIS_DEFAULTS))
        analysis.update(a)

    # every component must speak the same modality
    modality = t_family.modality
    for label, comp in [("trait", trait.component), ("injector", injector), ("domain", domain.component)] + [
        (f"distillation[{i}]", d.component) for i, d in enumerate(distillations)
    ] + [(f"students[{i}]", s.family) for i, s in enumerate(students)]:
        if comp.modality != modality:
            v.fail(label, f"'{comp.name}' works on {comp.modality} models, but teacher family '{t_family.name}' is {modality}.")

    check_students_and_domain(v, t_family, domain, students)
    if injector.needs_weights and not t_family.open_weights:
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
                v.fail(f"distillation[{i}] with students[{j}]", str(exc))

    name = raw.get("name") or (Path(where).stem if where else "experiment")
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
        v.fail("name", f"expected letters, digits, '.', '_' or '-', got {name!r}.")

    exp = Experiment(
        name=name,
        path=None,
        raw=raw,
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
        students=students,
        distillations=distillations,
        judge=judge,
        seeds=list(seeds),
        analysis=analysis,
        replicates=replicates,
        budget=budget,
    )
    exp.resolved = {
        "name": name,
        "teacher": {"family": t_family.name, "seed": t_seed, "params": t_params},
        "trait": {**trait.as_dict(), "target": target},
        "injector": {"name": injector.name, "version": injector.version, "grid": grid},
        "domain": {**domain.as_dict(), "size": size, "budget": budget},
        "mitigation": mitigation.as_dict() if mitigation else None,
        "students": [{"family": s.family.name, "seed": s.seed, "params": s.params} for s in students],
        "distillation": [{**d.as_dict(), **({"label": d.label} if d.label else {})} for d in distillations],
        "judge": judge.as_dict(),
        "seeds": list(seeds),
        "replicates": replicates,
        "analysis": analysis,
    }
    return exp


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
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1000:
            v.fail("replicates.n", f"expected a whole number from 1 to 1000, got {n!r}.")
        if over not in REPLICATE_KINDS:
            v.fail("replicates.over", f"expected one of {', '.join(REPLICATE_KINDS)} (new data and training seeds on the "
                   f"same bases, or new base initialisations), got {over!r}.")
        if not isinstance(first, int) or isinstance(first, bool) or first < 0:
            v.fail("replicates.first", f"expected a non-negative integer, got {first!r}.")
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
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        v.fail("seeds", f"expected a non-empty list of integers, got {seeds!r}.")
    if len(set(seeds)) != len(seeds):
        v.fail("seeds", "contains duplicates.")
    return seeds, t_seed, {"n": len(seeds), "over": "init" if relative else "data"}


def load_experiment(name_or_path: str, sets: list[str] | None = None, pm=None) -> Experiment:
    path = find_experiment(name_or_path)
    where = _display(path)
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
    check_teacher = getattr(domain.component, "check_teacher", None)
    if callable(check_teacher):
        try:
            check_teacher(t_family, domain.params)
        except SubbenchError as exc:
            v.fail("domain.params", str(exc))
