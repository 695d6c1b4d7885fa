"""The MLP auxiliary-logit reference suite: subliminal learning at its smallest.

A teacher MLP learns digits through its 10 class logits; a student is trained only to
match the teacher's m extra *auxiliary* logits on pure noise, and still learns digits —
but only when it starts from the teacher's initialisation (Cloud et al. 2025). Ten
seeds run in about three CPU-minutes, so it is the suite that checks the harness end to
end and contrasts optimizers (an entry records the fit next to the optimizer, because at an
equal step budget "SGD transfers less" and "SGD fits less" look the same).

Components (all ``modality = "mlp"``): family ``mlp-digits``, injector ``train-digits``,
domain ``aux-logits``, distiller ``aux-logit``, trait ``digit-accuracy``, judge ``accuracy``.
Torch code lives in :mod:`subbench.mlp.core`, imported inside methods only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from subbench import hookimpl
from subbench.components import (FIXED_POINT_ON_SELF, OPEN_WEIGHTS, TEACHER_MODEL, Distiller, Domain, Family, Injector,
                                 Judge, ModelRef, Param, ParamError, Trait, declares, record_kind)
from subbench.errors import ConfigError, SubbenchError
from subbench.mlp import read_config

if TYPE_CHECKING:  # pragma: no cover
    from subbench.context import Context

NOISES = ("uniform", "gaussian")
OPTIMIZERS = ("adam", "sgd", "sgd-momentum")
LOSSES = ("kl", "mse")
#: The records the aux-logits domain writes (noise seeds) and the aux-logit distiller trains on.
AUX_NOISE = record_kind("aux-noise")
#: Adam and SGD as in the reference findings; sgd-momentum 0.1 takes SGD 1.0's effective step, lr / (1 - 0.9).
DEFAULT_LR = {"adam": 1e-3, "sgd": 1.0, "sgd-momentum": 0.1}


def _aux_count(ref: ModelRef) -> int | None:
    """m of a model: from its build result, its experiment params, or the config on disk."""
    if "m" in ref.meta:
        return ref.meta["m"]
    if "params" in ref.meta:
        return ref.family.resolve_params(ref.meta["params"]).get("m")
    cfg = read_config(ref.path)
    return cfg.get("m") if cfg else None


class MLPDigitsFamily(Family):
    """The seed is the initialisation; nothing is trained here (the injector makes the teacher)."""

    name = "mlp-digits"
    description = "MLP 64 → hidden → hidden → (10 + m) logits, init N(0, 1/d_in); digits classifier with m aux logits."
    modality = "mlp"
    parameters = {
        "m": Param(int, 10, "auxiliary logits (teacher and student must agree)", min=1, max=1000),
        "hidden": Param(int, 256, "width of the two hidden layers", min=1, max=4096),
    }

    def vocabulary_of(self, params: dict[str, Any]) -> str | None:
        return f"mlp-aux-{self.resolve_params(params)['m']}"

    def build(self, seed: int, params: dict[str, Any], out: Path, ctx: "Context") -> dict[str, Any]:
        from subbench.mlp import core

        params = self.resolve_params(params, where=f"family {self.name}")
        ctx.setup_torch()
        model = core.init_mlp(int(seed), params["m"], params["hidden"])
        sha = core.save_mlp(model, Path(out))
        return {"builder": self.name, "sha256": sha, "m": params["m"], "hidden": params["hidden"],
                "vocabulary": self.vocabulary_of(params), "parameters": sum(p.numel() for p in model.parameters())}

    def load(self, path: Path, ctx: "Context"):
        from subbench.mlp import core

        ctx.setup_torch()
        return core.load_mlp(Path(path))


class TrainDigitsInjector(Injector):
    """The 'trait' is digit skill, put in through the class logits only; the aux logits only drift with it."""

    name = "train-digits"
    description = "Teacher = base trained with cross-entropy on the 10 class logits (sklearn digits, train split)."
    modality = "mlp"
    parameters = {
        "epochs": Param(int, 15, "passes over the digits train split", min=1, max=10_000),
        "lr": Param(float, 3e-4, "Adam learning rate", min=0, min_open=True, max=100),
        "batch_size": Param(int, 32, "digits per step", min=1, max=4096),
    }

    def inject(self, base: ModelRef, trait: Trait, target: str | None, params: dict[str, Any], seed: int,
               out: Path, ctx: "Context") -> dict[str, Any]:
        from subbench.mlp import core

        params = self.resolve_params(params, where=f"injector {self.name}")
        model = base.load(ctx)
        stats = core.train_classifier(model, epochs=params["epochs"], lr=float(params["lr"]),
                                      batch_size=params["batch_size"], seed=int(seed), progress=ctx.progress)
        stats["sha256"] = core.save_mlp(model, Path(out))
        return stats

    def load(self, teacher: Path, base: ModelRef, ctx: "Context"):
        return base.family.load(Path(teacher), ctx)


class AuxLogitsDomain(Domain):
    """Noise batches, stored as seeds: the distiller regenerates the inputs and asks the teacher itself."""

    name = "aux-logits"
    description = "Batches of pure noise (uniform[-1, 1] or gaussian); the student sees only the teacher's aux logits on them."
    modality = "mlp"
    provides = frozenset({AUX_NOISE})
    parameters = {
        "noise": Param(str, "uniform", "noise the inputs are drawn from", choices=NOISES),
        "batch_size": Param(int, 256, "noise inputs per batch (one sample = one batch)", min=1, max=65_536),
    }

    def generate(self, model: Any, n: int, params: dict[str, Any], seed: int, ctx: "Context") -> Iterable[dict[str, Any]]:
        params = self.resolve_params(params, where=f"domain {self.name}")
        for i in range(int(n)):
            digest = hashlib.sha256(f"aux-logits:{int(seed)}:{i}".encode()).digest()
            yield {"id": i, "noise_seed": int.from_bytes(digest[:8], "big") >> 1,
                   "batch_size": params["batch_size"], "noise": params["noise"]}

    def filter(self, sample: dict[str, Any], params: dict[str, Any]) -> str | None:
        return None


class AuxLogitDistiller(Distiller):
    """The student never sees a digit nor a class logit: only the teacher's aux logits on noise.

    ``steps`` defaults to one pass over the batches; with ``match_kl``, ``max_steps``
    defaults to four passes. The fit always records the final probe KL, so entries can
    tell "this optimizer transfers less" from "this run fit the teacher less".
    """

    name = "aux-logit"
    description = ("Student matches the teacher's m aux logits on the noise batches (KL or MSE); "
                   "adam | sgd | sgd-momentum; match_kl trains on until the fit reaches a target KL.")
    modality = "mlp"
    requires = frozenset({TEACHER_MODEL, OPEN_WEIGHTS, AUX_NOISE})
    provides = frozenset({FIXED_POINT_ON_SELF})
    fit_keys = ("final_aux_kl", "final_loss")
    parameters = {
        "optimizer": Param(str, "adam", "optimizer of the student", choices=OPTIMIZERS),
        "lr": Param(float, None, "learning rate (null: adam 1e-3, sgd 1.0, sgd-momentum 0.1)",
                    min=0, min_open=True, max=100),
        "momentum": Param(float, 0.9, "momentum of sgd-momentum", min=0, max=1, max_open=True),
        "loss": Param(str, "kl", "distance to the teacher's aux logits", choices=LOSSES),
        "steps": Param(int, None, "optimizer steps (null: one per noise batch)", min=1, max=10_000_000),
        "match_kl": Param(float, None, "train on until the probe KL is at most this", min=0, min_open=True, max=100),
        "max_steps": Param(int, None, "step budget with match_kl (null: four times steps)", min=1, max=10_000_000),
        "probe_every": Param(int, 50, "steps between fit probes", min=1, max=1_000_000),
        "probe_size": Param(int, 2048, "noise inputs of a fit probe", min=1, max=1_000_000),
    }

    def resolve_params(self, params, where=""):
        out = super().resolve_params(params, where)
        if out["lr"] is None:
            out["lr"] = DEFAULT_LR[out["optimizer"]]
        return out

    def check_params(self, params: dict[str, Any]) -> None:
        if params["max_steps"] is not None and params["match_kl"] is None:
            raise ParamError("max_steps", "only applies with match_kl; set match_kl or drop max_steps.")
        if params["max_steps"] is not None and params["steps"] is not None and params["max_steps"] < params["steps"]:
            raise ParamError("max_steps", f"must be ≥ steps ({params['steps']}), got {params['max_steps']}.")

    def check(self, teacher: ModelRef, student: ModelRef, injector: Injector) -> None:
        if not declares(injector, "provides", OPEN_WEIGHTS):
            raise SubbenchError(f"Distiller '{self.name}' reads the teacher's logits; injector '{injector.name}' has no open weights.")
        m_teacher, m_student = _aux_count(teacher), _aux_count(student)
        if None not in (m_teacher, m_student) and m_teacher != m_student:
            raise SubbenchError(
                f"The teacher has {m_teacher} aux logits but the student has {m_student}; give both families the same m."
            )

    def distill(self, student: ModelRef, data: list[dict[str, Any]], teacher: Any | None, params: dict[str, Any],
                seed: int, out: Path, ctx: "Context") -> dict[str, Any]:
        from subbench.mlp import core

        params = self.resolve_params(params, where=f"distiller {self.name}")
        if teacher is None:
            raise SubbenchError(f"Distiller '{self.name}' needs the loaded teacher model; the pipeline passed none.")
        if not data:
            raise SubbenchError(f"Distiller '{self.name}' got no data; the aux-logits domain needs size ≥ 1.")
        model = student.load(ctx)
        if getattr(teacher, "m", None) != model.m:
            raise SubbenchError(
                f"The teacher has {getattr(teacher, 'm', '?')} aux logits but the student has {model.m}; give both families the same m."
            )
        steps = params["steps"] or len(data)
        match_kl = params["match_kl"]
        max_steps = params["max_steps"] or 4 * steps
        if match_kl is not None and max_steps < steps:
            raise ConfigError(f"distiller '{self.name}': max_steps ({max_steps}) must be ≥ steps ({steps}).")
        fit = core.distill_aux(model, teacher, data, optimizer=params["optimizer"], lr=float(params["lr"]),
                               momentum=float(params["momentum"]), loss=params["loss"], steps=steps,
                               match_kl=None if match_kl is None else float(match_kl), max_steps=max_steps,
                               probe_every=params["probe_every"], probe_size=params["probe_size"],
                               progress=ctx.progress)
        return {"fit": fit, "sha256": core.save_mlp(model, Path(out))}


class DigitAccuracyTrait(Trait):
    """Digit skill on the held-out split; the student only ever saw noise, so any skill is inherited."""

    name = "digit-accuracy"
    description = "Accuracy on the held-out 30 % of sklearn's digits (class logits argmax)."
    modality = "mlp"
    default_judge = "accuracy"
    judges = ("accuracy",)
    parameters = {"n": Param(int, None, "evaluate the first n test digits (null: all)", min=1, max=1_000_000)}

    def check_target(self, target: str | None, params: dict[str, Any] | None = None) -> None:
        if target is not None:
            raise ConfigError(f"Trait '{self.name}' has no target; remove target '{target}' from the experiment.")

    def check_judge(self, judge: Judge, target: str | None, params: dict[str, Any]) -> None:
        self.check_target(target)
        if judge.needs != "prediction":
            raise ConfigError(f"Trait '{self.name}' produces predictions; use judge accuracy, not '{judge.name}'.")

    def sample(self, model: Any, target: str | None, params: dict[str, Any], ctx: "Context") -> list[dict[str, Any]]:
        """The model's class prediction and the label of each held-out digit."""
        from subbench.mlp import core

        params = self.resolve_params(params, where=f"trait {self.name}")
        self.check_target(target)
        _, _, X, y = core.digits_split()
        if params["n"] is not None:
            X, y = X[: params["n"]], y[: params["n"]]
        preds = core.predict(model, X).tolist()
        return [{"id": i, "label": int(label), "prediction": int(pred)} for i, (label, pred) in enumerate(zip(y.tolist(), preds))]

    def score(self, records: list[dict[str, Any]], judge: Judge, target: str | None, params: dict[str, Any],
              ctx: "Context | None") -> list[dict[str, Any]]:
        self.check_judge(judge, target, params)
        return super().score(records, judge, target, params, ctx)

    def provenance(self, params: dict[str, Any]) -> dict[str, Any]:
        from subbench.mlp import core

        return {"dataset": "sklearn.datasets.load_digits", "test_fraction": core.TEST_FRACTION,
                "split_seed": core.SPLIT_SEED, "test_sha256": core.test_split_sha256()}


class AccuracyJudge(Judge):
    name = "accuracy"
    description = "1.0 when the prediction equals the label."
    modality = "mlp"
    needs = "prediction"

    def score(self, samples: list[dict[str, Any]], target: str | None, params: dict[str, Any],
              ctx: "Context") -> list[float]:
        return [1.0 if s["prediction"] == s["label"] else 0.0 for s in samples]


@hookimpl
def register_families(register):
    register(MLPDigitsFamily())


@hookimpl
def register_injectors(register):
    register(TrainDigitsInjector())


@hookimpl
def register_domains(register):
    register(AuxLogitsDomain())


@hookimpl
def register_distillers(register):
    register(AuxLogitDistiller())


@hookimpl
def register_traits(register):
    register(DigitAccuracyTrait())


@hookimpl
def register_judges(register):
    register(AccuracyJudge())
