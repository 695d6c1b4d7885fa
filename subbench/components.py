"""The base classes every plugin component derives from.

A component is a small object with a ``name``, a ``version`` (part of every artifact key:
bump it when a change alters outputs) and ``defaults`` (the parameters it accepts; a
config that names any other parameter is rejected). Heavy libraries are imported inside
methods, never at module import, so ``subbench --help`` stays fast.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

from subbench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from subbench.context import Context


class Component:
    """Common shape of all registered things."""

    kind: ClassVar[str] = "component"
    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    #: Parameters accepted in an experiment file, with their defaults.
    defaults: ClassVar[dict[str, Any]] = {}
    #: "causal-lm" or "mlp"; components only combine with the same modality.
    modality: ClassVar[str] = "causal-lm"

    #: Set by the registry: the plugin that registered this component.
    plugin: str | None = None

    def resolve_params(self, params: dict[str, Any] | None, where: str = "") -> dict[str, Any]:
        """Merge ``params`` over ``defaults``; reject names this component does not know."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            bad = unknown[0]
            hint = difflib.get_close_matches(bad, list(self.defaults), n=1)
            allowed = ", ".join(sorted(self.defaults)) or "none"
            did = f" Did you mean: {hint[0]}?" if hint else ""
            loc = f"{where}: " if where else ""
            raise ConfigError(
                f"{loc}unknown parameter '{bad}' for {self.kind} '{self.name}'.{did} Allowed: {allowed}."
            )
        out = dict(self.defaults)
        out.update(params)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "plugin": self.plugin,
            "modality": self.modality,
            "description": self.description,
            "defaults": self.defaults,
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


class Mitigation(Component):
    """A defence applied to the kept data before the student trains on it."""

    kind = "mitigation"

    def apply(
        self, data: list[dict[str, Any]], params: dict[str, Any], seed: int, ctx: "Context"
    ) -> list[dict[str, Any]]:
        raise NotImplementedError


KINDS: dict[str, type[Component]] = {
    "families": Family,
    "traits": Trait,
    "injectors": Injector,
    "domains": Domain,
    "judges": Judge,
    "mitigations": Mitigation,
    "distillers": Distiller,
}
