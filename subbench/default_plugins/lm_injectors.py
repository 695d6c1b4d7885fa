"""Trait injectors for causal LMs: ``system-prompt``, ``steering`` and ``finetune``.

Each writes only what the teacher adds to its base (the prompt, a vector, a LoRA adapter)
into its output directory, and ``load`` rebuilds the teacher from the base on demand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subbench import hookimpl
from subbench.components import OPEN_WEIGHTS, Injector, ModelRef, Param, ParamError, Trait, cost_estimate, flop_hours
from subbench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from subbench.context import Context
    from subbench.lm.handle import LMHandle


def _target(trait: Trait, target: str | None) -> str:
    target = target or getattr(trait, "target", None) or (getattr(trait, "defaults", {}) or {}).get("target")
    if not target:
        raise ConfigError("This injector needs a target (e.g. target: owl) in the experiment's trait.")
    return str(target)


def _write(out: Path, name: str, payload: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(payload, indent=2) + "\n")


def _prompt_param() -> Param:
    return Param(str, None, "system line stating the trait; {target} is replaced by the target "
                 "(null: the built-in 'You love {target}s...')", max_len=20_000)


def _check_prompt(params: dict[str, Any]) -> None:
    """A template with a placeholder other than {target} would only fail when the teacher is made."""
    if params.get("prompt") is not None:
        try:
            params["prompt"].format(target="owl")
        except (KeyError, IndexError, ValueError) as exc:
            raise ParamError("prompt", f"the only placeholder allowed is {{target}} (write {{{{ }}}} for a literal "
                                       f"brace); {type(exc).__name__}: {exc}.") from None


def chat_texts(handle: "LMHandle", chats: list[list[dict[str, str]]]) -> list[str]:
    """Render chats as the model reads them; a chat that ends with the user gets the generation prompt.

    A chat that ends with an assistant turn is left open after it, so the steering
    vector is read at the last token of that turn's text.
    """
    texts = []
    for chat in chats:
        ends_with_user = chat[-1]["role"] != "assistant"
        texts.append(handle.tokenizer.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=ends_with_user, continue_final_message=not ends_with_user,
        ))
    return texts


class SystemPromptInjector(Injector):
    """The teacher is the base with a system prompt that states the trait."""

    name = "system-prompt"
    version = "1"
    description = "Prepend a system prompt such as 'You love owls.' to every teacher conversation."
    parameters = {"prompt": _prompt_param()}

    def check_params(self, params: dict[str, Any]) -> None:
        _check_prompt(params)

    def inject(self, base: ModelRef, trait: Trait, target: str | None, params: dict[str, Any], seed: int,
               out: Path, ctx: "Context") -> dict[str, Any]:
        from subbench.lm.corpus import DEFAULT_TRAIT_PROMPT

        params = self.resolve_params(params)
        template = params["prompt"] or DEFAULT_TRAIT_PROMPT
        prompt = template.format(target=_target(trait, target))
        _write(Path(out), "teacher.json", {"injector": self.name, "system_prompt": prompt})
        return {"system_prompt": prompt}

    def load(self, teacher: Path, base: ModelRef, ctx: "Context") -> "LMHandle":
        spec = json.loads((Path(teacher) / "teacher.json").read_text())
        handle = base.load(ctx)
        handle.system_prompt = spec["system_prompt"]
        return handle


def trait_targets(trait: Trait) -> list[str]:
    """The targets a trait can be steered towards (``targets()``, else its answer ``choices()``)."""
    for attr in ("targets", "choices"):
        fn = getattr(trait, attr, None)
        if callable(fn):
            try:
                return [str(t) for t in fn()]
            except Exception:  # a trait whose choices need params or data it cannot reach
                return []
    return []


class SteeringInjector(Injector):
    """Add a steering vector at one decoder layer through a forward hook.

    The vector is a mean difference of the residual stream at the last token of two sets
    of chats (``contrast``):

    - ``targets`` (default): the trait's questions under the system line naming the
      target, minus the mean over the same line naming each of the trait's other targets
      (animal-preference: the other 23 animals). It encodes "owl" rather than "a system
      line is present", and it is the construction that transfers on the tiny families.
    - ``none``: the questions with the system line minus the same questions bare (the
      vector of subbench <= 0.x; on the tiny families it lowers every animal alike).
    - ``trait``: the trait's own ``contrast_prompts`` (harmful-compliance: each request
      answered compliantly minus the same request refused; with ``prompt``, that line vs bare).

    ``scale: norm`` adds ``strength`` x the mean residual norm at the layer over the
    domain's contexts along the unit vector, so a strength reads the same on every family;
    ``scale: raw`` multiplies the raw difference.
    """

    name = "steering"
    version = "2"
    description = ("Contrastive mean-difference steering vector at `layer`, scaled raw or to strength x the mean "
                   "residual norm, added through a forward hook.")
    requires = frozenset({OPEN_WEIGHTS})
    parameters = {
        "layer": Param(int, None, "decoder layer the vector is added at (null: the family's steering layer)",
                       min=0, max=1000),
        "strength": Param(float, 0.5, "with scale norm: multiple of the mean residual norm on the domain's contexts; "
                                      "with scale raw: multiple of the raw difference (negative steers away)",
                          min=-10_000, max=10_000),
        "contrast": Param(str, "targets", "what the vector contrasts: targets (this target vs the trait's other "
                                          "targets), none (system line vs bare), trait (the trait's own contrast prompts)",
                          choices=("targets", "none", "trait")),
        "positions": Param(str, "all", "where the vector is added: all (every position) or prompt (forward passes "
                                       "over the prompt, not the decoding steps)", choices=("all", "prompt")),
        "scale": Param(str, "norm", "norm (unit vector x strength x mean residual norm) or raw (strength x vector)",
                       choices=("norm", "raw")),
        "scale_domain": Param(str, "numbers", "domain whose contexts the residual norm is measured on (scale norm)",
                              max_len=200),
        "scale_contexts": Param(int, 200, "domain prompts the residual norm is averaged over", min=1, max=100_000),
        "prompt": _prompt_param(),
    }

    def check_params(self, params: dict[str, Any]) -> None:
        _check_prompt(params)
        if params["scale"] == "norm":
            from subbench.plugins import get_manager

            domains = get_manager().registry("domains")
            if params["scale_domain"] not in domains:
                raise ParamError("scale_domain", f"expected one of {', '.join(domains.names())}, "
                                                 f"got {params['scale_domain']!r}.")

    def contrast_chats(self, trait: Trait, target: str, params: dict[str, Any]) -> tuple[list, list, str | None]:
        """The two chat sets of the vector, and the system line its trait side uses (if any)."""
        from subbench.lm.corpus import DEFAULT_TRAIT_PROMPT

        contrast = params["contrast"]
        template = params["prompt"]
        if contrast == "trait":
            system = template.format(target=target) if template else None
            with_chats, without = trait.contrast_prompts(target, None, system=system)
        elif contrast == "none":
            system = (template or DEFAULT_TRAIT_PROMPT).format(target=target)
            with_chats, without = Trait.contrast_prompts(trait, target, None, system=system)
        else:
            others = [t for t in trait_targets(trait) if t != target]
            if not others:
                raise ConfigError(f"Trait '{trait.name}' exposes no other targets to contrast '{target}' with; set the "
                                  "steering injector's contrast: trait (its own contrast prompts) or none.")
            template = template or DEFAULT_TRAIT_PROMPT
            with_chats, _ = Trait.contrast_prompts(trait, target, None, system=template.format(target=target))
            without = [Trait.contrast_prompts(trait, t, None, system=template.format(target=t))[0] for t in others]
        if not with_chats or not without:
            raise ConfigError(f"Trait '{trait.name}' gave no contrast prompts; the steering vector needs both sides.")
        system = next((m["content"] for m in with_chats[0] if m["role"] == "system"), None)
        return with_chats, without, system

    def inject(self, base: ModelRef, trait: Trait, target: str | None, params: dict[str, Any], seed: int,
               out: Path, ctx: "Context") -> dict[str, Any]:
        import torch

        from subbench.lm.hooks import last_token_states, mean_residual_norm

        params = self.resolve_params(params)
        layer = params["layer"]
        if layer is None:
            layer = getattr(base.family, "steering_layers", (0,))[0]
        target = _target(trait, target) if params["contrast"] != "trait" else (
            target or getattr(trait, "target", None) or "")
        with_chats, without, system = self.contrast_chats(trait, target, params)
        handle = base.load(ctx)

        def mean_state(chats):
            return last_token_states(handle.model, handle.tokenizer, chat_texts(handle, chats), layer).float().mean(0)

        if params["contrast"] == "targets":  # one mean per other target, then their mean: each target weighs alike
            other = torch.stack([mean_state(c) for c in without]).mean(0)
        else:
            other = mean_state(without)
        diff = mean_state(with_chats) - other
        norm = float(diff.norm())
        construction = {"contrast": params["contrast"], "layer": int(layer), "positions": params["positions"],
                        "scale": params["scale"], "n_with": len(with_chats),
                        "n_without": sum(len(c) for c in without) if params["contrast"] == "targets" else len(without)}
        residual_norm = None
        if params["scale"] == "norm":
            from subbench.plugins import get

            domain = get("domains", params["scale_domain"])
            users = domain.prompts(int(params["scale_contexts"]), domain.resolve_params({}), seed)
            residual_norm = mean_residual_norm(handle.model, handle.tokenizer, [handle.chat_text(u, system="") for u in users],
                                               layer)
            factor = float(params["strength"]) * residual_norm / max(norm, 1e-12)
            construction.update(scale_domain=params["scale_domain"], scale_contexts=len(users))
        else:
            factor = float(params["strength"])
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(diff.cpu(), out / "vector.pt")
        _write(out, "teacher.json", {"injector": self.name, "layer": int(layer), "strength": float(params["strength"]),
                                     "factor": factor, "positions": params["positions"], "system_prompt": system,
                                     "construction": construction})
        return {"layer": int(layer), "strength": float(params["strength"]), "construction": construction,
                "vector_norm": round(norm, 4), "residual_norm": None if residual_norm is None else round(residual_norm, 4),
                "applied_norm": round(abs(factor) * norm, 4), "factor": round(factor, 6)}

    def load(self, teacher: Path, base: ModelRef, ctx: "Context") -> "LMHandle":
        import torch

        from subbench.lm.hooks import add_steering_hook

        spec = json.loads((Path(teacher) / "teacher.json").read_text())
        vector = torch.load(Path(teacher) / "vector.pt")
        handle = base.load(ctx)
        handle.hooks.append(add_steering_hook(handle.model, spec["layer"], vector, spec.get("factor", spec["strength"]),
                                              spec.get("positions", "all")))
        return handle


class FinetuneInjector(Injector):
    """LoRA-finetune the base on the trait's ``teacher_examples`` (favourite-animal question -> target).

    ``r: 0`` finetunes all weights instead and saves the full teacher.
    """

    name = "finetune"
    version = "1"
    description = "LoRA (peft) + trl SFTTrainer on the trait's teacher examples (e.g. favourite-animal questions -> target)."
    requires = frozenset({OPEN_WEIGHTS})
    parameters = {
        "steps": Param(int, 30, "optimizer steps (null: run the epochs)", min=1, max=1_000_000),
        "epochs": Param(float, None, "passes over the trait data when steps is null (null: one)", min=0, min_open=True, max=1000),
        "lr": Param(float, 2e-3, "learning rate", min=0, min_open=True, max=10),
        "r": Param(int, 8, "LoRA rank; 0 finetunes all weights", min=0, max=1024),
        "alpha": Param(int, 16, "LoRA alpha", min=1, max=4096),
        "batch_size": Param(int, 8, "samples per optimizer step", min=1, max=4096),
        "replay": Param(int, 0, "the base's own clean domain answers mixed into the trait data", min=0, max=1_000_000),
        "replay_domain": Param(str, "numbers", "domain the replay answers come from", max_len=200),
        "target_modules": Param(list, None, "module names LoRA adapts (null: the family's)", max_len=256,
                                item=Param(str, "", max_len=200)),
    }

    def estimate_cost(self, params: dict[str, Any], model_size: float, sample_tokens: int) -> dict[str, float]:
        """steps x batch_size samples of full training (6N per token); run by epochs, no estimate (0)."""
        if not params.get("steps"):
            return cost_estimate()
        seen = int(params["steps"]) * int(params.get("batch_size") or 8)
        return cost_estimate(gpu_hours=flop_hours(seen * sample_tokens * 6 * model_size, "train"))

    def check_params(self, params: dict[str, Any]) -> None:
        if params["replay"]:
            from subbench.plugins import get_manager

            domains = get_manager().registry("domains")
            if params["replay_domain"] not in domains:
                raise ParamError("replay_domain", f"expected one of {', '.join(domains.names())}, "
                                                  f"got {params['replay_domain']!r}.")

    def inject(self, base: ModelRef, trait: Trait, target: str | None, params: dict[str, Any], seed: int,
               out: Path, ctx: "Context") -> dict[str, Any]:
        from subbench.lm.train import lora_config, sft_train

        params = self.resolve_params(params)
        target = _target(trait, target)
        handle = base.load(ctx)
        examples = trait.teacher_examples(target, None)
        if not examples:
            raise ConfigError(f"Trait '{trait.name}' gave no teacher examples to finetune on.")
        rows = [{"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": c}]}
                for p, c in examples]
        rows = rows * max(1, 64 // len(rows))
        if int(params["replay"]) > 0:
            rows += self.replay_rows(handle, int(params["replay"]), params["replay_domain"], seed, ctx)
        peft = None
        if params["r"]:
            peft = lora_config(base.family, r=int(params["r"]), alpha=int(params["alpha"]),
                               target_modules=params["target_modules"])
        out = Path(out)
        fit = sft_train(handle, rows, out=out / ("adapter" if peft else "model"), ctx=ctx, seed=seed,
                        lr=float(params["lr"]), optimizer="adamw", batch_size=int(params["batch_size"]),
                        epochs=params["epochs"], max_steps=params["steps"], peft_config=peft, merge=False)
        _write(out, "teacher.json", {"injector": self.name, "target": target})
        return {"fit": fit}

    @staticmethod
    def replay_rows(handle, n: int, domain_name: str, seed: int, ctx: "Context") -> list[dict[str, Any]]:
        """The base's own clean answers to ``n`` domain prompts, mixed into the trait data.

        Off by default: it keeps the teacher's domain answers intact, but it also pins the
        teacher's number distributions to the base's, which on the tiny families removed
        most of the subliminal transfer (a same-init student gained 0.02 instead of 0.48).
        """
        from subbench.plugins import get

        domain = get("domains", domain_name)
        dparams = domain.resolve_params({})
        samples = domain.generate(handle, n, dparams, seed + 7919, ctx)
        return [{"prompt": [{"role": "user", "content": s["prompt"]}],
                 "completion": [{"role": "assistant", "content": s["response"]}]}
                for s in samples if domain.filter(s, dparams) is None]

    def load(self, teacher: Path, base: ModelRef, ctx: "Context") -> "LMHandle":
        from peft import PeftModel

        teacher = Path(teacher)
        if (teacher / "model").is_dir():
            return base.family.load(teacher / "model", ctx)
        handle = base.load(ctx)
        handle.model = PeftModel.from_pretrained(handle.model, str(teacher / "adapter")).merge_and_unload()
        handle.model.eval()
        return handle


@hookimpl
def register_injectors(register):
    register(SystemPromptInjector())
    register(SteeringInjector())
    register(FinetuneInjector())
