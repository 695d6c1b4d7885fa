"""Distillers for causal LMs: ``sft`` on the teacher's sampled text and ``logit`` on its full distributions.

Both share the transformers training loop (trl's SFTTrainer for ``sft``, a Trainer subclass
for ``logit``), so the optimizer, epochs and step budget mean the same in both, and both
report how closely the student fit at the end: a weak transfer with a poor fit is
under-training, not a defence.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from subbench import hookimpl
from subbench.components import (FIXED_POINT_ON_SELF, OPEN_WEIGHTS, TEACHER_MODEL, VOCABULARY, Distiller, Injector,
                                 ModelRef, Param, cost_estimate, declares, flop_hours)
from subbench.errors import SubbenchError

if TYPE_CHECKING:  # pragma: no cover
    from subbench.context import Context


def _peft(student: ModelRef, lora: Any):
    if not lora:
        return None
    from subbench.lm.train import lora_config

    return lora_config(student.family, r=int(lora.get("r", 8)), alpha=int(lora.get("alpha", 16)))


def _vocabulary(ref: ModelRef) -> str | None:
    """The vocabulary of a model reference: what its build recorded, else its family's answer, else its hub id.

    A built base's record comes first: it is the only place a tiny base's corpus mix (and so
    its vocabulary) is known at distillation time, when the reference carries no params.
    """
    import json

    meta = ref.meta or {}
    vocab = meta.get("vocabulary") or ref.family.vocabulary_of(meta.get("params") or {}) or meta.get("model_id")
    base = Path(ref.path) / "base.json"
    if vocab is None and base.exists():
        vocab = json.loads(base.read_text()).get("model_id")
    return vocab


def _training(lr: float, epochs: float, batch_size: int) -> dict[str, Param]:
    """The parameters both distillers share (same training loop, same meaning)."""
    return {
        "optimizer": Param(str, "adamw", "optimizer of the training loop", choices=("adamw", "sgd")),
        "lr": Param(float, lr, "learning rate", min=0, min_open=True, max=10),
        "epochs": Param(float, epochs, "passes over the kept samples (fractions allowed)", min=0, min_open=True,
                        max=1000),
        "batch_size": Param(int, batch_size, "samples per optimizer step", min=1, max=4096),
        "lora": Param(dict, None, "LoRA adapter {r, alpha} merged after training; null: full finetuning",
                      fields={"r": Param(int, 8, "LoRA rank", min=1, max=1024),
                              "alpha": Param(int, 16, "LoRA alpha", min=1, max=4096)}),
        "max_steps": Param(int, None, "stop after this many optimizer steps (null: run the epochs)",
                           min=1, max=10_000_000),
    }


def _training_cost(self, n_samples: int, params: dict[str, Any], student_size: float, teacher_size: float,
                   sample_tokens: int) -> dict[str, float]:
    """Both distillers: max_steps x batch_size samples, else epochs passes; 4N FLOPs per token with LoRA, 6N full,
    plus the teacher's forward pass (2N) for logit distillation."""
    if params.get("max_steps"):
        seen = int(params["max_steps"]) * int(params.get("batch_size") or 1)
    else:
        seen = n_samples * float(params.get("epochs") or 1)
    per_token = (4 if params.get("lora") else 6) * student_size
    if TEACHER_MODEL in self.requires:
        per_token += 2 * teacher_size
    return cost_estimate(gpu_hours=flop_hours(seen * sample_tokens * per_token, "train"))


class SFTDistiller(Distiller):
    """Supervised finetuning on the kept samples (hard labels: the sampled tokens)."""

    name = "sft"
    version = "1"
    estimate_cost = _training_cost
    description = "trl SFT on prompt/completion pairs, loss on the completion; LoRA or full finetuning."
    parameters = _training(lr=1e-4, epochs=1, batch_size=32)

    def distill(self, student: ModelRef, data: list[dict[str, Any]], teacher: Any | None, params: dict[str, Any],
                seed: int, out: Path, ctx: "Context") -> dict[str, Any]:
        from subbench.lm.train import sft_train

        params = self.resolve_params(params)
        if not data:
            raise SubbenchError("No kept samples to distill from; generate more or relax the domain filter.")
        handle = student.load(ctx)
        rows = [{"prompt": [{"role": "user", "content": d["prompt"]}],
                 "completion": [{"role": "assistant", "content": d["response"]}]} for d in data]
        fit = sft_train(handle, rows, out=Path(out), ctx=ctx, seed=seed, lr=float(params["lr"]),
                        optimizer=params["optimizer"], batch_size=int(params["batch_size"]), epochs=params["epochs"],
                        max_steps=params["max_steps"], peft_config=_peft(student, params["lora"]), merge=True)
        return {"fit": fit, "samples": len(data)}


class LogitDistiller(Distiller):
    """Soft-label distillation: match the teacher's next-token distribution on every response token."""

    name = "logit"
    version = "1"
    description = "KL(teacher || student) on the response tokens; needs an open-weight teacher with the same vocabulary."
    requires = frozenset({TEACHER_MODEL, OPEN_WEIGHTS, VOCABULARY})
    provides = frozenset({FIXED_POINT_ON_SELF})
    estimate_cost = _training_cost
    parameters = {
        **_training(lr=1e-3, epochs=5, batch_size=64),
        "support": Param(str, "observed", "KL over the tokens seen in the kept responses (observed) or the whole "
                         "vocabulary (all)", choices=("observed", "all")),
        "match_kl": Param(float, None, "stop once the mean KL to the teacher over the last 5 steps is at most this "
                          "(matched fit; epochs / max_steps stay the cap); null: run them all", min=0, min_open=True,
                          max=1000),
    }

    def resolve_params(self, params: dict[str, Any] | None, where: str = "") -> dict[str, Any]:
        """Leave ``match_kl`` out when unset, so every logit run from before it existed keeps its cache key."""
        out = super().resolve_params(params, where)
        if out.get("match_kl") is None:
            out.pop("match_kl", None)
        return out

    def check(self, teacher: ModelRef, student: ModelRef, injector: Injector) -> None:
        for ref in (teacher, student):
            if not declares(ref.family, "provides", OPEN_WEIGHTS):
                raise SubbenchError(
                    f"Logit distillation needs the teacher's and student's logits, but family '{ref.family.name}' is "
                    "text-only (an API endpoint); use distiller sft.")
        if not declares(injector, "provides", OPEN_WEIGHTS):
            raise SubbenchError(
                f"Logit distillation needs the teacher's logits, but injector '{injector.name}' is not open-weight; use distiller sft.")
        vt, vs = _vocabulary(teacher), _vocabulary(student)
        if vt is None or vs is None or vt != vs:
            raise SubbenchError(
                f"Logit distillation needs teacher and student to share a vocabulary, but {teacher.family.name} uses "
                f"{vt or 'an unknown one'} and {student.family.name} uses {vs or 'an unknown one'}; use distiller sft.")

    def distill(self, student: ModelRef, data: list[dict[str, Any]], teacher: Any | None, params: dict[str, Any],
                seed: int, out: Path, ctx: "Context") -> dict[str, Any]:
        from subbench.lm.train import kd_train

        params = self.resolve_params(params)
        if teacher is None:
            raise SubbenchError("Logit distillation was called without the loaded teacher; this is a pipeline bug, please report it.")
        if not data:
            raise SubbenchError("No kept samples to distill from; generate more or relax the domain filter.")
        if teacher.vocabulary:
            vs = _vocabulary(student)
            if vs != teacher.vocabulary:
                raise SubbenchError(
                    f"Logit distillation needs a shared vocabulary, but the teacher uses {teacher.vocabulary} and the student {vs}; use distiller sft.")
        handle = student.load(ctx)
        rows = [{"prompt": d["prompt"], "response": d["response"]} for d in data]
        fit = kd_train(handle, teacher, rows, out=Path(out), ctx=ctx, seed=seed, lr=float(params["lr"]),
                       optimizer=params["optimizer"], batch_size=int(params["batch_size"]), epochs=params["epochs"],
                       max_steps=params["max_steps"], peft_config=_peft(student, params["lora"]),
                       support=params["support"], match_kl=params.get("match_kl"))
        return {"fit": fit, "samples": len(data)}


@hookimpl
def register_distillers(register):
    register(SFTDistiller())
    register(LogitDistiller())
