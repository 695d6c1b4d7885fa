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

from subbench.errors import ConfigError

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

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "plugin": self.plugin,
            "modality": self.modality,
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
    #: False for models reachable only as text (an OpenAI-compatible endpoint): no
    #: steering, no logit distillation.
    open_weights: ClassVar[bool] = True

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


class Trait(Component):
    """What may transfer, and how a model is evaluated for it."""

    kind = "trait"
    #: Judge used when the experiment does not name one.
    default_judge: ClassVar[str] = ""
    #: Judges whose inputs this trait can produce.
    judges: ClassVar[tuple[str, ...]] = ()

    def evaluate(
        self, model: Any, judge: "Judge", target: str | None, params: dict[str, Any], ctx: "Context"
    ) -> list[dict[str, Any]]:
        """Evaluate ``model``; return one record per eval sample, each with a numeric ``score``."""
        raise NotImplementedError

    def check_target(self, target: str | None, params: dict[str, Any]) -> None:
        """Raise :class:`ConfigError` when ``target`` cannot be scored (checked before any work)."""

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
    #: False when the teacher is only reachable as text (no logits, no weights).
    open_weights: ClassVar[bool] = True
    #: True when injecting changes or hooks the weights (steering, finetune): such an
    #: injector cannot work on a text-only family (an OpenAI-compatible endpoint).
    needs_weights: ClassVar[bool] = False

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


class Distiller(Component):
    """Trains a student on kept domain data."""

    kind = "distiller"
    #: True when the method reads the teacher's logits (needs open weights, shared vocabulary).
    needs_teacher_model: ClassVar[bool] = False
    #: True when distilling a model toward itself leaves it unchanged (a KL to its own
    #: outputs has zero gradient). The pipeline then uses the student's base as the
    #: same-init control instead of training on rounding noise (which Adam would amplify).
    fixed_point_on_self: ClassVar[bool] = False

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
        ``needs_teacher_model`` is set. Returns ``{"fit": {...}}``: how closely the student
        matched the teacher's outputs at the end (final loss / KL), and anything else the
        entry should record.
        """
        raise NotImplementedError


class Judge(Component):
    """Scores evaluation samples for a trait."""

    kind = "judge"
    #: What the trait must produce for this judge: "generation", "loglikelihood" or "prediction".
    needs: ClassVar[str] = "generation"

    def score(
        self, samples: list[dict[str, Any]], target: str | None, params: dict[str, Any], ctx: "Context"
    ) -> list[float]:
        """One score per sample (1.0 = shows the trait)."""
        raise NotImplementedError

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
