"""Trait injectors for causal LMs: ``system-prompt``, ``steering`` and ``finetune``.

Each writes only what the teacher adds to its base (the prompt, a vector, a LoRA adapter)
into its output directory, and ``load`` rebuilds the teacher from the base on demand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subbench import hookimpl
from subbench.components import Injector, ModelRef, Param, ParamError, Trait
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


class SteeringInjector(Injector):
    """Add a contrastive activation vector (the trait's chats with the trait minus without) at one layer.

    The chats come from ``Trait.contrast_prompts``: for animal-preference the corpus
    questions under "you love owls ..." against the bare questions, for harmful-compliance
    its harmful requests answered compliantly against the same requests refused. ``prompt``
    overrides the trait-side system line where the trait uses one.
    """

    name = "steering"
    version = "1"
    description = "Mean-difference steering vector at `layer`, added with `strength` through a forward hook."
    needs_weights = True
    parameters = {
        "layer": Param(int, None, "decoder layer the vector is added at (null: the family's steering layer)",
                       min=0, max=1000),
        "strength": Param(float, 1.0, "multiple of the raw mean-difference vector (negative steers away)",
                          min=-10_000, max=10_000),
        "prompt": _prompt_param(),
    }

    def check_params(self, params: dict[str, Any]) -> None:
        _check_prompt(params)

    def inject(self, base: ModelRef, trait: Trait, target: str | None, params: dict[str, Any], seed: int,
               out: Path, ctx: "Context") -> dict[str, Any]:
        import torch

        from subbench.lm.hooks import last_token_states

        params = self.resolve_params(params)
        layer = params["layer"]
        if layer is None:
            layer = getattr(base.family, "steering_layers", (0,))[0]
        target = _target(trait, target)
        system = params["prompt"].format(target=target) if params["prompt"] else None
        with_chats, without_chats = trait.contrast_prompts(target, None, system=system)
        if not with_chats or not without_chats:
            raise ConfigError(f"Trait '{trait.name}' gave no contrast prompts; the steering vector needs both sides.")
        system = next((m["content"] for m in with_chats[0] if m["role"] == "system"), None)
        handle = base.load(ctx)
        with_trait, without = chat_texts(handle, with_chats), chat_texts(handle, without_chats)
        diff = (last_token_states(handle.model, handle.tokenizer, with_trait, layer).mean(0)
                - last_token_states(handle.model, handle.tokenizer, without, layer).mean(0))
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(diff.float().cpu(), out / "vector.pt")
        _write(out, "teacher.json", {"injector": self.name, "layer": int(layer), "strength": float(params["strength"]),
                                     "system_prompt": system})
        return {"layer": int(layer), "strength": float(params["strength"]), "vector_norm": round(float(diff.norm()), 4)}

    def load(self, teacher: Path, base: ModelRef, ctx: "Context") -> "LMHandle":
        import torch

        from subbench.lm.hooks import add_steering_hook

        spec = json.loads((Path(teacher) / "teacher.json").read_text())
        vector = torch.load(Path(teacher) / "vector.pt")
        handle = base.load(ctx)
        handle.hooks.append(add_steering_hook(handle.model, spec["layer"], vector, spec["strength"]))
        return handle


class FinetuneInjector(Injector):
    """LoRA-finetune the base on the trait's ``teacher_examples`` (favourite-animal question -> target).

    ``r: 0`` finetunes all weights instead and saves the full teacher.
    """

    name = "finetune"
    version = "1"
    description = "LoRA (peft) + trl SFTTrainer on the trait's teacher examples (e.g. favourite-animal questions -> target)."
    needs_weights = True
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
