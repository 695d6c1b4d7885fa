"""The base classes every plugin component derives from.

A component is a small object with a ``name``, a ``version`` (part of every artifact key:
bump it when a change alters outputs) and ``parameters``: one :class:`Param` per
parameter it accepts, with its type, default, range and a one-line doc. A config that
names any other parameter, or gives a value of the wrong type or out of range, is
rejected when the experiment is validated, before any stage runs. ``defaults`` (name ->
default) is derived from the declarations; a third-party component that only declares
``defaults`` still works, with a loose check inferred from each default's type. Heavy
libraries are imported inside methods, never at module import, so ``subbench --help``
stays fast.
"""

from __future__ import annotations

import difflib
import math
import os
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

from subbench.errors import ConfigError, SubbenchError

if TYPE_CHECKING:  # pragma: no cover
    from subbench.context import Context

#: Seeds are handed to torch, numpy and random: all accept [0, 2**31).
SEED_MAX = 2**31 - 1
#: Environment switch that lets a run past the size estimates (never past the type/range checks).
ALLOW_LARGE_ENV = "SUBBENCH_ALLOW_LARGE"

_TYPE_NAMES = {bool: ("true or false", "booleans"), int: ("an integer", "integers"), float: ("a number", "numbers"),
               str: ("a string", "strings"), list: ("a list", "lists"), dict: ("a mapping", "mappings"),
               object: ("any value", "values")}
_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlong = 40


def show(value: Any) -> str:
    """A value as an error message quotes it: YAML spelling for scalars, truncated when long."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return {math.inf: "inf", -math.inf: "-inf"}.get(value, "nan")
    return _REPR.repr(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def allow_large() -> bool:
    """True when the user asked to run past the size estimates (``SUBBENCH_ALLOW_LARGE=1``)."""
    value = os.environ.get(ALLOW_LARGE_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{ALLOW_LARGE_ENV} must be 1 or 0, got {value!r}.")


class ParamError(ConfigError):
    """A parameter value that its declaration refuses; ``param`` is its path (``lora.r``, ``judges[1]``)."""

    def __init__(self, param: str, detail: str, where: str = ""):
        self.param, self.detail, self.where = param, detail, where
        super().__init__(f"{where}: parameter '{param}': {detail}" if where else f"parameter '{param}': {detail}")


@dataclass(frozen=True)
class Param:
    """One parameter: its type, default, allowed values and a one-line doc.

    ``type`` is bool, int, float (ints accepted), str, list, dict or object (anything), or a
    tuple of those. Bools are never ints; floats must be finite unless ``finite=False``.
    ``min``/``max`` bound numbers (inclusive unless ``min_open``/``max_open``), ``max_len``
    bounds strings and lists, ``item`` checks each list element and ``fields`` the keys
    of a mapping. A default of None makes the parameter nullable.
    """

    type: Any
    default: Any = None
    doc: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    nullable: bool = False
    min_open: bool = False
    max_open: bool = False
    max_len: int | None = None
    item: "Param | None" = None
    fields: "dict[str, Param] | None" = None
    finite: bool = True
    #: True for a check guessed from a bare ``defaults`` entry.
    inferred: bool = False

    def __post_init__(self):
        if self.default is None:
            object.__setattr__(self, "nullable", True)
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))

    @classmethod
    def infer(cls, default: Any) -> "Param":
        """The loose check a bare ``defaults`` entry gets: the default's kind of value, any size."""
        if default is None:
            kind: Any = object
        elif isinstance(default, bool):
            kind = bool
        elif isinstance(default, (int, float)):
            kind = float
        elif isinstance(default, (str, list, dict)):
            kind = type(default)
        else:
            kind = object
        return cls(kind, default, inferred=True)

    @property
    def types(self) -> tuple:
        return self.type if isinstance(self.type, tuple) else (self.type,)

    def type_name(self) -> str:
        names = [getattr(t, "__name__", str(t)) for t in self.types]
        name = " | ".join("any" if n == "object" else n for n in names)
        if self.item is not None and list in self.types:
            name = name.replace("list", f"list[{self.item.type_name()}]")
        return name + (" | null" if self.nullable else "")

    def allowed(self, plural: bool = False) -> str:
        """What the parameter accepts, as an error message or ``list --params`` states it."""
        if self.choices is not None:
            text = "one of " + ", ".join(show(c) if not isinstance(c, str) else c for c in self.choices)
        else:
            parts = []
            for t in self.types:
                text = _TYPE_NAMES.get(t, (getattr(t, "__name__", str(t)),) * 2)[1 if plural else 0]
                if t in (int, float) and (self.min is not None or self.max is not None):
                    lo = "-inf" if self.min is None else _num(self.min)
                    hi = "inf" if self.max is None else _num(self.max)
                    left = "(" if self.min_open or self.min is None else "["
                    right = ")" if self.max_open or self.max is None else "]"
                    text += f" in {left}{lo}, {hi}{right}"
                elif t is str and self.max_len is not None:
                    text += f" of at most {self.max_len} characters"
                elif t is list:
                    if self.item is not None:
                        text += " of " + self.item.allowed(plural=True)
                    if self.max_len is not None:
                        text += f" (at most {self.max_len})"
                elif t is dict and self.fields:
                    text += " {" + ", ".join(f"{k}: {f.allowed()}" for k, f in self.fields.items()) + "}"
                parts.append(text)
            text = " or ".join(parts)
        return text + (" or null" if self.nullable else "")

    def check(self, value: Any, path: str) -> None:
        """Raise :class:`ParamError` naming ``path`` when ``value`` is not allowed."""
        if value is None:
            if self.nullable:
                return
            self._fail(value, path)
        if self.choices is not None:
            try:
                ok = any(type(value) is type(c) and value == c for c in self.choices)
            except Exception:  # pragma: no cover - exotic values
                ok = False
            if not ok:
                hint = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1)
                did = f" Did you mean: {hint[0]}?" if hint and isinstance(value, str) else ""
                raise ParamError(path, f"expected {self.allowed()}, got {show(value)}.{did}")
            return
        kind = next((t for t in self.types if _is(value, t)), None)
        if kind is None:
            self._fail(value, path)
        if kind in (int, float):
            if isinstance(value, float) and not math.isfinite(value):
                if self.finite:
                    self._fail(value, path)
                return
            if self.min is not None and (value < self.min or (self.min_open and value == self.min)):
                self._fail(value, path)
            if self.max is not None and (value > self.max or (self.max_open and value == self.max)):
                self._fail(value, path)
        elif kind is str:
            if self.max_len is not None and len(value) > self.max_len:
                raise ParamError(path, f"expected {self.allowed()}, got a string of {len(value)} characters.")
        elif kind is list:
            if self.max_len is not None and len(value) > self.max_len:
                raise ParamError(path, f"expected {self.allowed()}, got {len(value)} items.")
            if self.item is not None:
                for i, v in enumerate(value):
                    self.item.check(v, f"{path}[{i}]")
        elif kind is dict and self.fields is not None:
            for k, v in value.items():
                if k not in self.fields:
                    hint = difflib.get_close_matches(str(k), list(self.fields), n=1)
                    did = f" Did you mean: {hint[0]}?" if hint else ""
                    raise ParamError(f"{path}.{k}", f"unknown field.{did} Allowed: {', '.join(self.fields)}.")
                self.fields[k].check(v, f"{path}.{k}")

    def _fail(self, value: Any, path: str):
        raise ParamError(path, f"expected {self.allowed()}, got {show(value)}.")

    def describe(self, name: str) -> dict[str, Any]:
        return {"name": name, "type": self.type_name(), "default": self.default, "allowed": self.allowed(),
                "doc": self.doc, "inferred": self.inferred}


def _is(value: Any, kind: Any) -> bool:
    if kind is object:
        return True
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def defaults_of(parameters: dict[str, Param]) -> dict[str, Any]:
    """The ``defaults`` dict that a set of declarations implies (what other code reads)."""
    import copy

    return {name: copy.deepcopy(p.default) for name, p in parameters.items()}


def sampling_params(max_new_tokens: int) -> dict[str, Param]:
    """The sampling parameters every generating domain declares (one meaning across domains)."""
    return {
        "max_new_tokens": Param(int, max_new_tokens, "tokens sampled per answer", min=1, max=8192),
        "temperature": Param(float, 1.0, "sampling temperature (0: greedy)", min=0, max=10),
        "top_p": Param(float, 1.0, "nucleus sampling mass", min=0, min_open=True, max=1),
        "batch_size": Param(int, 128, "prompts per generation batch", min=1, max=4096),
        "prompt_seed": Param(int, None, "seed of the prompt set (null: the replicate seed)", min=0, max=2**31 - 1),
    }


#: Capability names (docs/plugins.md, "Capabilities"). A component declares what it
#: ``requires`` and what it ``provides``; validation matches them before any stage runs.
#: Weights and logits are reachable: a family or the teacher an injector makes provides it;
#: an injector that changes the weights, a logit distiller or an activation defence requires it.
OPEN_WEIGHTS = "open-weights"
#: A distiller that requires it is handed the loaded teacher (or the control's base).
TEACHER_MODEL = "teacher-model"
#: Teacher and student must share a vocabulary (``Family.vocabulary_of``).
VOCABULARY = "vocabulary"
#: A distiller that provides it leaves a model distilled toward itself unchanged (a KL to
#: its own outputs has zero gradient); the runner then uses the base as the same-init control.
FIXED_POINT_ON_SELF = "fixed-point-on-self"
#: A family that requires it gets the torch set-up (threads, denormals, deterministic kernels)
#: before its models load; torch-free families leave it out and torch is never imported.
TORCH = "torch"


def record_kind(kind: str) -> str:
    """The capability a record kind stands for: a domain provides ``record_kind("chat")``, a distiller requires it."""
    return f"records:{kind}"


#: Old boolean attributes -> (declaration set, capability). Read-only aliases of the sets for
#: plugins written before them; a class body that still assigns one is folded into the set.
LEGACY_FLAGS: dict[str, tuple[str, str]] = {
    "open_weights": ("provides", OPEN_WEIGHTS),
    "needs_weights": ("requires", OPEN_WEIGHTS),
    "needs_open_weights": ("requires", OPEN_WEIGHTS),
    "needs_teacher_model": ("requires", TEACHER_MODEL),
    "fixed_point_on_self": ("provides", FIXED_POINT_ON_SELF),
}


def _flag(attr: str):
    which, cap = LEGACY_FLAGS[attr]

    def get(self) -> bool:
        return cap in getattr(self, which)

    return property(get, doc=f"True when ``{cap}`` is in ``{which}`` (read-only alias kept for older plugins).")


def declares(comp: Any, which: str, capability: str) -> bool:
    """Whether ``comp`` has ``capability`` in its ``requires`` or ``provides``.

    An object that is no :class:`Component` (a duck-typed stand-in) is read through the old
    boolean attributes, with the defaults they had (open weights unless told otherwise).
    """
    declared = getattr(comp, which, None)
    if isinstance(declared, (set, frozenset, tuple, list)):
        return capability in declared
    for attr, (w, cap) in LEGACY_FLAGS.items():
        if w == which and cap == capability and hasattr(comp, attr):
            return bool(getattr(comp, attr))
    return which == "provides" and capability == OPEN_WEIGHTS


#: The figures every cost estimate may hold (missing ones count 0); docs/plugins.md.
COST_FIELDS = ("gpu_hours", "cpu_seconds", "gpu_mem_gb")
#: Assumed accelerator: bf16 dense peak of an A100 (an H100 is ~3x faster), and the share of
#: it each kind of work reaches with plain transformers (sampling is memory-bound).
PEAK_TFLOPS = 312.0
MFU = {"train": 0.35, "generate": 0.10}
#: Tokens of a chat-templated prompt, and of a response when a component says nothing.
PROMPT_TOKENS = 60
RESPONSE_TOKENS = 100
#: Trait evaluation samples when a trait says nothing (the paper grids: 50 prompts x 100 samples).
EVAL_SAMPLES = 5000


def flop_hours(flops: float, kind: str) -> float:
    """GPU hours that ``flops`` of ``kind`` work ("train" or "generate") take on the assumed accelerator."""
    return flops / (PEAK_TFLOPS * 1e12 * MFU[kind]) / 3600.0


def cost_estimate(gpu_hours: float = 0.0, cpu_seconds: float = 0.0, gpu_mem_gb: float = 0.0) -> dict[str, float]:
    """A cost estimate as components return it."""
    return {"gpu_hours": gpu_hours, "cpu_seconds": cpu_seconds, "gpu_mem_gb": gpu_mem_gb}


#: What a stage asks of a worker when its components say nothing (a Ray executor reads these).
DEFAULT_RESOURCES = {"cpus": 1, "gpus": 0, "memory_gb": 2.0}


class Component:
    """Common shape of all registered things."""

    kind: ClassVar[str] = "component"
    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    #: The parameters accepted in an experiment file: name -> :class:`Param`.
    parameters: ClassVar[dict[str, Param]] = {}
    #: name -> default, derived from ``parameters`` (a component may still set only this).
    defaults: ClassVar[dict[str, Any]] = {}
    #: "causal-lm" or "mlp"; components only combine with the same modality.
    modality: ClassVar[str] = "causal-lm"
    #: Capabilities it needs from the run or the components it is combined with (OPEN_WEIGHTS,
    #: TEACHER_MODEL, VOCABULARY, TORCH, ``record_kind(...)``). Declare the whole set; extend a
    #: parent's with ``Parent.requires | {...}``.
    requires: ClassVar[frozenset[str]] = frozenset()
    #: Capabilities it offers them (OPEN_WEIGHTS, FIXED_POINT_ON_SELF, ``record_kind(...)``).
    provides: ClassVar[frozenset[str]] = frozenset()

    #: Set by the registry: the plugin that registered this component.
    plugin: str | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        body = cls.__dict__
        if "parameters" in body:
            declared = dict(body["parameters"])
            extra = {k: v for k, v in dict(body.get("defaults") or {}).items() if k not in declared}
            cls.parameters = {**declared, **{k: Param.infer(v) for k, v in extra.items()}}
            cls.defaults = defaults_of(cls.parameters)
        for which in ("requires", "provides"):
            if which in body:
                setattr(cls, which, frozenset(body[which]))
        for attr, (which, cap) in LEGACY_FLAGS.items():
            value = body.get(attr)
            if isinstance(value, (bool, int)) and not isinstance(value, property):
                current = set(getattr(cls, which))
                current.add(cap) if value else current.discard(cap)
                setattr(cls, which, frozenset(current))
                delattr(cls, attr)
                if not hasattr(cls, attr):
                    setattr(cls, attr, _flag(attr))

    def param_specs(self) -> dict[str, Param]:
        """Every accepted parameter with its check: the declared ones, inferred ones for bare ``defaults``."""
        declared = self.parameters or {}
        return {name: declared[name] if name in declared else Param.infer(value)
                for name, value in (self.defaults or {}).items()}

    def resolve_params(self, params: dict[str, Any] | None, where: str = "") -> dict[str, Any]:
        """Merge ``params`` over ``defaults`` after checking each given value against its declaration.

        Also runs :meth:`check_params` on the result, so the checks are the same when the
        experiment is validated and when a stage runs.
        """
        loc = f"{where}: " if where else ""
        if params is not None and not isinstance(params, dict):
            raise ConfigError(f"{loc}expected a mapping of parameters for {self.kind} '{self.name}', got {show(params)}.")
        params = dict(params or {})
        specs = self.param_specs()
        unknown = sorted((k for k in params if k not in specs), key=str)
        if unknown:
            bad = unknown[0]
            hint = difflib.get_close_matches(str(bad), list(specs), n=1)
            allowed = ", ".join(sorted(specs)) or "none"
            did = f" Did you mean: {hint[0]}?" if hint else ""
            raise ConfigError(
                f"{loc}unknown parameter '{bad}' for {self.kind} '{self.name}'.{did} Allowed: {allowed}."
            )
        out = dict(self.defaults)
        out.update(params)
        try:
            for name, value in params.items():
                specs[name].check(value, name)
            self.check_params(out)
        except ParamError as exc:
            raise ParamError(exc.param, exc.detail, where or f"{self.kind} '{self.name}'") from None
        return out

    def check_params(self, params: dict[str, Any]) -> None:
        """Checks across parameters or against the registry (ensemble members, a family's size).

        Receives the merged parameters after each passed its own declaration; raise
        :class:`ParamError` (naming the parameter) or :class:`ConfigError`.
        """

    def resources(self, stage: str, params: dict[str, Any]) -> dict[str, Any]:
        """What a worker running ``stage`` with this component needs: ``cpus``, ``gpus``, ``memory_gb``.

        An executor that places stages on machines (Ray) reads it; the defaults fit a CPU stage.
        """
        return dict(DEFAULT_RESOURCES)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "plugin": self.plugin,
            "modality": self.modality,
            "requires": sorted(self.requires),
            "provides": sorted(self.provides),
            "description": self.description,
            "defaults": self.defaults,
            "parameters": [p.describe(n) for n, p in self.param_specs().items()],
        }


@dataclass
class ModelRef:
    """A model artifact on disk and the family that knows how to load it."""

    family: "Family"
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    def load(self, ctx: "Context") -> Any:
        return self.family.load(self.path, ctx)


class Family(Component):
    """How to make (or fetch) a base model and load any model of this family."""

    kind = "family"
    #: Name of the vocabulary; logit distillation needs teacher and student to share it.
    vocabulary: ClassVar[str | None] = None
    #: A torch model: the runner sets torch up before loading one. A torch-free family
    #: declares ``requires = frozenset()`` and the run never imports torch.
    requires = frozenset({TORCH})
    #: Weights and logits are reachable. A model reachable only as text (an OpenAI-compatible
    #: endpoint) provides nothing: no steering, no logit distillation.
    provides = frozenset({OPEN_WEIGHTS})
    open_weights = _flag("open_weights")

    def build(self, seed: int, params: dict[str, Any], out: Path, ctx: "Context") -> dict[str, Any]:
        """Write the base model for ``seed`` into ``out``.

        Returns provenance for the entry: ``model_id``, ``revision`` (hub models) or
        ``builder`` and ``sha256`` of the weights (local models).
        """
        raise NotImplementedError

    def load(self, path: Path, ctx: "Context") -> Any:
        """Load a model that ``build`` or a distiller wrote into ``path``."""
        raise NotImplementedError

    def vocabulary_of(self, params: dict[str, Any]) -> str | None:
        """The vocabulary a model of this family uses (hub families: the model id)."""
        return self.vocabulary

    def parameter_count(self, params: dict[str, Any]) -> float | None:
        """Parameters of a model of this family, for ``--dry-run``'s GPU hours; None: a CPU model, no estimate."""
        return None

    def estimate_cost(self, params: dict[str, Any]) -> dict[str, float] | None:
        """Cost of holding one model (``gpu_mem_gb``: bf16 weights); None for a CPU model."""
        n = self.parameter_count(params)
        return None if n is None else cost_estimate(gpu_mem_gb=2 * n / 1e9)

    def resources(self, stage: str, params: dict[str, Any]) -> dict[str, Any]:
        """One GPU and room for the weights (training: weights, gradients and Adam, 16 bytes each) when sized."""
        n = self.parameter_count(params)
        if n is None:
            return dict(DEFAULT_RESOURCES)
        per_param = 16 if stage in ("base", "inject", "distill") else 2
        return {"cpus": 4, "gpus": 1, "memory_gb": round(per_param * n / 1e9 + 8, 1)}


class Trait(Component):
    """What may transfer, and how a model is evaluated for it."""

    kind = "trait"
    #: Judge used when the experiment does not name one.
    default_judge: ClassVar[str] = ""
    #: Judges whose inputs this trait can produce.
    judges: ClassVar[tuple[str, ...]] = ()

    def sample(self, model: Any, target: str | None, params: dict[str, Any], ctx: "Context") -> list[dict[str, Any]]:
        """Answer (or score the choices of) the trait's prompts with ``model``: one record per eval sample.

        The records carry what any judge of this trait needs (the sampled texts, the choices'
        log-likelihoods, the predictions), so the ``sample`` stage is keyed without the judge
        and a new judge re-scores them without loading the model (``subbench score``).
        """
        raise NotImplementedError

    def score(
        self, records: list[dict[str, Any]], judge: "Judge", target: str | None, params: dict[str, Any],
        ctx: "Context | None",
    ) -> list[dict[str, Any]]:
        """The judge over the records :meth:`sample` wrote: each record with a numeric ``score``.

        ``judge`` has the experiment's params bound (call ``judge.score(records, target, None,
        ctx)``). The default scores each record as it is; a trait whose records hold several
        answers (one per question) folds them here, and may add per-sample ``metrics``.
        """
        records = [dict(r) for r in records]
        scores = judge.score(records, target, None, ctx)
        if len(scores) != len(records):
            raise SubbenchError(f"Judge '{judge.name}' returned {len(scores)} scores for {len(records)} samples.")
        for rec, s in zip(records, scores):
            rec["score"] = float(s)
        return records

    def summarize(self, records: list[dict[str, Any]], judge: "Judge", params: dict[str, Any]) -> dict[str, Any] | None:
        """The judge's extra figures over the scored records (ensembles: per-judge means, agreement)."""
        return judge.summarize(records, getattr(judge, "params", None) or {})

    def evaluate(
        self, model: Any, judge: "Judge", target: str | None, params: dict[str, Any], ctx: "Context"
    ) -> list[dict[str, Any]]:
        """:meth:`sample`, then :meth:`score`: one record per eval sample, each with a numeric ``score``.

        Kept for plugins written before the two stages: a trait that overrides only this
        still runs, its judged records stored by the ``sample`` stage (keyed with the judge)
        and passed through by ``score``; such samples cannot be re-judged by ``subbench score``.
        """
        self.check_judge(judge, target, params)
        return self.score(self.sample(model, target, params, ctx), judge, target, params, ctx)

    def check_judge(self, judge: "Judge", target: str | None, params: dict[str, Any]) -> None:
        """Raise :class:`ConfigError` when ``judge`` cannot score this trait's records (checked before sampling)."""

    def samples_apart(self) -> bool:
        """True when this trait samples apart from judging (it implements :meth:`sample`)."""
        return type(self).sample is not Trait.sample or type(self).evaluate is Trait.evaluate

    def check_target(self, target: str | None, params: dict[str, Any]) -> None:
        """Raise :class:`ConfigError` when ``target`` cannot be scored (checked before any work)."""

    def estimate_cost(self, params: dict[str, Any], model_size: float) -> dict[str, float]:
        """Cost of evaluating one model of ``model_size`` parameters (a trait with its own prompt count overrides it).

        The default samples ``eval_samples(params)`` (if the trait has that method) or
        EVAL_SAMPLES prompts of PROMPT_TOKENS + 16 tokens.
        """
        counter = getattr(self, "eval_samples", None)
        n_eval = int(counter(params)) if callable(counter) else EVAL_SAMPLES
        return self.eval_cost(n_eval, 16, model_size)

    @staticmethod
    def eval_cost(n_eval: int, new_tokens: int, model_size: float) -> dict[str, float]:
        """``n_eval`` answers of ``new_tokens`` after a prompt, forward passes only."""
        return cost_estimate(gpu_hours=flop_hours(n_eval * (PROMPT_TOKENS + new_tokens) * 2 * model_size, "generate"))

    def provenance(self, params: dict[str, Any]) -> dict[str, Any]:
        """Hashes of the prompt set and task files, for the entry."""
        return {}

    def trait_words(self, target: str | None, params: dict[str, Any] | None = None) -> list[str]:
        """Words that name the trait outright (the target, its plural, synonyms), which no kept sample may hold.

        Domains whose answers are free text (``code``, ``cot``) reject any sample with one of
        them; the default is the target and its plural.
        """
        if not target or not str(target).strip():
            return []
        word = str(target).strip().lower()
        return [word] if word.endswith("s") else [word, word + "s"]

    def questions(self, params: dict[str, Any] | None = None) -> list[str]:
        """User prompts that call on the trait, for injectors that build a teacher from them.

        Injectors take their prompts from the trait so that a harmful-compliance teacher is
        steered or finetuned on harmful requests, not on favourite-animal questions.
        """
        raise ConfigError(f"Trait '{self.name}' gives no prompts to build a teacher from; use the system-prompt injector.")

    def teacher_examples(self, target: str | None, params: dict[str, Any] | None = None) -> list[tuple[str, str]]:
        """(prompt, completion) pairs that show the trait, for the ``finetune`` injector."""
        raise ConfigError(f"Trait '{self.name}' gives no teacher examples; use the system-prompt or steering injector.")

    def contrast_prompts(
        self, target: str | None, params: dict[str, Any] | None = None, *, system: str | None = None
    ) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
        """Chats with the trait active and matched chats without it, for the ``steering`` vector.

        Each chat is a list of ``{"role", "content"}`` messages; the vector is read at its
        last token (after the generation prompt when the chat ends with the user). ``system``
        is the injector's own trait prompt when it sets one. The default pairs every
        :meth:`questions` prompt under ``system`` with the same prompt under none.
        """
        if not system:
            raise ConfigError(f"Trait '{self.name}' needs a steering prompt; set the steering injector's `prompt`.")
        qs = self.questions(params)
        with_trait = [[{"role": "system", "content": system}, {"role": "user", "content": q}] for q in qs]
        return with_trait, [[{"role": "user", "content": q}] for q in qs]


class Injector(Component):
    """Makes a teacher out of a base model."""

    kind = "injector"
    #: The teacher it makes keeps open weights; one reachable only as text provides nothing.
    #: An injector that changes or hooks the weights (steering, finetune) also
    #: ``requires`` OPEN_WEIGHTS: it cannot work on a text-only family.
    provides = frozenset({OPEN_WEIGHTS})
    open_weights = _flag("open_weights")
    needs_weights = _flag("needs_weights")

    def inject(
        self,
        base: ModelRef,
        trait: Trait,
        target: str | None,
        params: dict[str, Any],
        seed: int,
        out: Path,
        ctx: "Context",
    ) -> dict[str, Any]:
        """Write what the teacher needs beyond the base (adapter, vector, prompt) into ``out``."""
        raise NotImplementedError

    def load(self, teacher: Path, base: ModelRef, ctx: "Context") -> Any:
        """Load the teacher: the base with the trait active."""
        raise NotImplementedError

    def estimate_cost(self, params: dict[str, Any], model_size: float, sample_tokens: int) -> dict[str, float]:
        """Cost of making one teacher from a base of ``model_size`` parameters; prompts and steering cost nothing."""
        return cost_estimate()


class Domain(Component):
    """Benign prompts, how a model answers them, and the filter that keeps clean answers."""

    kind = "domain"

    def generate(
        self, model: Any, n: int, params: dict[str, Any], seed: int, ctx: "Context"
    ) -> Iterable[dict[str, Any]]:
        """Yield ``n`` raw samples (dicts with an ``id``) from the loaded ``model``."""
        raise NotImplementedError

    def filter(self, sample: dict[str, Any], params: dict[str, Any]) -> str | None:
        """Return None to keep ``sample``, else the rejection reason (a short slug)."""
        return None

    def sample_tokens(self, params: dict[str, Any]) -> int:
        """Tokens of one sample (prompt and answer), for cost estimates; a domain that sets its answer length overrides it."""
        return PROMPT_TOKENS + RESPONSE_TOKENS

    def estimate_cost(self, n: int, params: dict[str, Any], model_size: float) -> dict[str, float]:
        """Cost of ``n`` samples written by a model of ``model_size`` parameters (forward passes)."""
        return cost_estimate(gpu_hours=flop_hours(n * self.sample_tokens(params) * 2 * model_size, "generate"))


class Distiller(Component):
    """Trains a student on kept domain data."""

    kind = "distiller"
    #: A method that reads the teacher's logits requires TEACHER_MODEL (it is handed the
    #: loaded teacher), OPEN_WEIGHTS and VOCABULARY; one that trains on a record kind only a
    #: domain of its own writes requires ``record_kind(...)``. FIXED_POINT_ON_SELF in
    #: ``provides`` makes the runner use the student's base as the same-init control instead
    #: of training on rounding noise (which Adam would amplify).
    needs_teacher_model = _flag("needs_teacher_model")
    fixed_point_on_self = _flag("fixed_point_on_self")

    def check(self, teacher: ModelRef, student: ModelRef, injector: Injector) -> None:
        """Raise :class:`SubbenchError` when this teacher/student pair cannot be distilled."""

    def distill(
        self,
        student: ModelRef,
        data: list[dict[str, Any]],
        teacher: Any | None,
        params: dict[str, Any],
        seed: int,
        out: Path,
        ctx: "Context",
    ) -> dict[str, Any]:
        """Train from ``student`` on ``data``; save a model ``student.family`` can load into ``out``.

        ``teacher`` is the loaded teacher (or base, for a control) when
        ``requires`` holds TEACHER_MODEL. Returns ``{"fit": {...}}``: how closely the student
        matched the teacher's outputs at the end (final loss / KL), and anything else the
        entry should record.
        """
        raise NotImplementedError

    def estimate_cost(self, n_samples: int, params: dict[str, Any], student_size: float, teacher_size: float,
                      sample_tokens: int) -> dict[str, float]:
        """Cost of one student trained on ``n_samples`` samples of ``sample_tokens`` tokens.

        The default is one full-finetuning pass (6 FLOPs per parameter and token) plus the
        teacher's forward pass when TEACHER_MODEL is required.
        """
        per_token = 6 * student_size + (2 * teacher_size if TEACHER_MODEL in self.requires else 0)
        return cost_estimate(gpu_hours=flop_hours(n_samples * sample_tokens * per_token, "train"))

    #: Fit keys, most telling first, that the default :meth:`fit_summary` looks for.
    fit_keys: ClassVar[tuple[str, ...]] = ("final_kl_to_teacher", "final_kl", "final_loss")

    def fit_summary(self, fit: dict[str, Any]) -> tuple[str, float] | None:
        """The one figure of a student's ``fit`` that the results table shows: (label, value), or None.

        The default takes the first numeric ``fit_keys`` entry and drops its ``final_`` prefix.
        """
        for k in self.fit_keys:
            if isinstance(fit.get(k), (int, float)) and not isinstance(fit.get(k), bool):
                return k.replace("final_", "", 1), fit[k]
        return None


class Judge(Component):
    """Scores evaluation samples for a trait."""

    kind = "judge"
    #: The record kind this judge reads, which the trait's ``sample`` stage stores:
    #: "generation" (a ``response``), "loglikelihood" (``choices`` and ``loglikelihoods``)
    #: or "prediction" (``prediction`` and ``label``).
    needs: ClassVar[str] = "generation"
    #: ``record_kind(needs)``, derived: the kind of record the judge scores.
    requires = frozenset({record_kind("generation")})

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "needs" in cls.__dict__ and "requires" not in cls.__dict__ and isinstance(cls.needs, str):
            cls.requires = frozenset({*(c for c in cls.requires if not c.startswith("records:")), record_kind(cls.needs)})

    #: True for a judge that must run the model under test itself (it cannot work from
    #: stored samples): the pipeline then judges while sampling (the sample stage is keyed
    #: with the judge) and ``subbench score`` refuses it.
    needs_model: ClassVar[bool] = False
    #: True for a judge that combines other judges' verdicts (an ensemble): a trait's
    #: ``judges`` list does not restrict it; its members must read what the trait produces.
    combines: ClassVar[bool] = False

    def score(
        self, samples: list[dict[str, Any]], target: str | None, params: dict[str, Any], ctx: "Context"
    ) -> list[float]:
        """One score per sample (1.0 = shows the trait)."""
        raise NotImplementedError

    def verdicts(
        self, samples: list[dict[str, Any]], target: str | None, params: dict[str, Any], ctx: "Context | None",
        label: str | None = None,
    ) -> list[float | None]:
        """One verdict per sample for a judge that combines judges: None where this judge stated none.

        The default is :meth:`score`; a judge that can fail to read a verdict (an LLM judge
        whose reply does not parse) returns None there, so that it abstains from an
        ensemble's vote instead of voting its fallback score. ``label`` is this judge's
        name in the ensemble, for what it records on the samples.
        """
        return [float(v) for v in self.score(samples, target, params, ctx)]

    def provenance(self, params: dict[str, Any]) -> dict[str, Any]:
        """Judge model and prompt hash, for the entry."""
        return {"name": self.name, "version": self.version}

    def summarize(self, samples: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any] | None:
        """Extra per-evaluation figures for the entry (ensembles: per-judge means, agreement)."""
        return None


#: Where a mitigation acts in a cell (docs/mitigations.md).
MITIGATION_POINTS = ("decoding", "data", "training", "activations")


class Mitigation(Component):
    """A defence against transfer, applied at one ``point`` of a cell.

    The runner applies it to the teacher's side *and* the control's side identically, so
    any drop in transfer is the defence's doing, not a control that moved:

    - ``decoding``: :meth:`decode` returns keyword overrides for the model's ``generate``
      (temperature, min_p, ...), used when the teacher and the control's base write.
    - ``data`` (the default): :meth:`apply` rewrites or drops kept samples, teacher's and
      control's alike.
    - ``training``: :meth:`train_params` returns distiller parameter overrides, used for
      the student and its control.
    - ``activations`` (open weights): :meth:`activation_hooks` installs forward hooks on the
      model while it writes; the direction is computed once from the teacher and its base
      and applied to both.

    ``cost`` says in one line what the defence costs to run (shown on the board).
    """

    kind = "mitigation"
    point: ClassVar[str] = "data"
    cost: ClassVar[str] = ""
    #: A defence that reads the teacher's weights or logits requires OPEN_WEIGHTS (the
    #: activations point always does).
    needs_open_weights = _flag("needs_open_weights")

    def apply(
        self, data: list[dict[str, Any]], params: dict[str, Any], seed: int, ctx: "Context"
    ) -> list[dict[str, Any]]:
        return [dict(s) for s in data]

    def apply_pair(self, teacher: list[dict[str, Any]], control: list[dict[str, Any]], params: dict[str, Any],
                   seed: int, ctx: "Context") -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        """Data point, for a defence that must see both sides (a detector fitted on teacher vs base data).

        Returns the teacher's kept rows, the control's and a summary (e.g. the detector's
        true-positive rate at its false-positive rate). The default applies :meth:`apply`
        to each side on its own.
        """
        return self.apply(teacher, params, seed, ctx), self.apply(control, params, seed, ctx), {}

    def decode(self, params: dict[str, Any]) -> dict[str, Any]:
        """Keyword overrides for ``model.generate`` (decoding point)."""
        return {}

    def train_params(self, distiller: Any, dist_params: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """The distiller's parameters under this defence (training point); must stay valid for ``distiller``."""
        return dict(dist_params)

    def activation_hooks(self, model: Any, teacher: Any, base: Any, trait: Any, target: str | None,
                         params: dict[str, Any], ctx: "Context") -> list[Any]:
        """Install hooks on ``model`` (the teacher or the control's base); return handles with ``remove()``."""
        return []


KINDS: dict[str, type[Component]] = {
    "families": Family,
    "traits": Trait,
    "injectors": Injector,
    "domains": Domain,
    "judges": Judge,
    "mitigations": Mitigation,
    "distillers": Distiller,
}
