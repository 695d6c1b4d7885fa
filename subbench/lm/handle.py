"""A loaded causal LM with its tokenizer: the one object traits, domains and distillers receive.

Every LM family's ``load`` returns an :class:`LMHandle`, and every injector returns one with
its trait active (a system prompt, a steering hook, merged LoRA weights), so the code that
generates or scores never needs to know how the trait got there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from subbench.context import Context


@dataclass
class LMHandle:
    model: "PreTrainedModel"
    tokenizer: "PreTrainedTokenizerBase"
    name: str
    system_prompt: str | None = None
    vocabulary: str | None = None
    open_weights: bool = True
    hooks: list[Any] = field(default_factory=list, repr=False)

    def chat_text(self, user: str, system: str | None = None) -> str:
        """The chat-templated prompt (with generation prompt) via tokenizer.apply_chat_template."""
        system = self.system_prompt if system is None else system
        messages = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": user})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def generate(self, users: list[str], *, max_new_tokens: int = 40, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int = 0, batch_size: int = 64, desc: str = "",
                 progress: Callable | None = None, allowed_token_ids: list[int] | None = None,
                 min_p: float = 0.0, min_prob: float = 0.0) -> list[str]:
        """Sampled (temperature > 0) or greedy responses, response part only, deterministic per seed.

        Each batch reseeds from ``seed`` and its own index, so a sample does not depend on
        how many batches ran before it in this process. ``allowed_token_ids`` restricts
        decoding to those tokens (constrained decoding; end of turn is always allowed).
        ``min_p`` > 0 drops tokens below that fraction of the top token's probability
        (the ``min-p`` mitigation, relative form); ``min_prob`` > 0 drops tokens whose
        probability is below that absolute threshold (threshold sampling; the top token stays).
        """
        import torch

        tok = self.tokenizer
        old_side = tok.padding_side
        tok.padding_side = "left"
        texts = [self.chat_text(u) for u in users]
        starts = list(range(0, len(texts), batch_size))
        bar = progress(total=len(texts), desc=desc or f"generate {self.name}", unit="sample") if progress else None
        out: list[str] = []
        try:
            for b, start in enumerate(starts):
                chunk = texts[start:start + batch_size]
                enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
                torch.manual_seed(seed * 1_000_003 + b)
                kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": tok.pad_token_id,
                                          "eos_token_id": tok.eos_token_id}
                if temperature and temperature > 0:
                    kwargs.update(do_sample=True, temperature=float(temperature), top_p=float(top_p), top_k=0)
                    if min_p and min_p > 0:
                        kwargs["min_p"] = float(min_p)
                else:
                    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                processors: list[Any] = []
                if allowed_token_ids is not None:
                    processors.append(_AllowOnly(allowed_token_ids + [tok.eos_token_id]))
                if min_prob and min_prob > 0 and temperature and temperature > 0:
                    processors.append(_MinProb(float(min_prob)))
                if processors:
                    kwargs["logits_processor"] = processors
                with torch.no_grad():
                    gen = self.model.generate(**enc, **kwargs)
                new = gen[:, enc["input_ids"].shape[1]:]
                out += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            tok.padding_side = old_side
            if bar is not None:
                bar.close()
        return out

    def close(self) -> None:
        """Remove hooks."""
        for h in self.hooks:
            h.remove()
        self.hooks.clear()


class _MinProb:
    """Logits processor for threshold sampling: tokens below ``p`` (of the current distribution) are dropped."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, input_ids, scores):
        import torch

        probs = torch.softmax(scores.float(), dim=-1)
        keep = probs >= self.p
        keep.scatter_(-1, probs.argmax(-1, keepdim=True), True)
        return scores.masked_fill(~keep, float("-inf"))


class _AllowOnly:
    """Logits processor that leaves only the given tokens possible."""

    def __init__(self, ids: list[int]):
        self.ids = sorted(set(ids))
        self.mask = None

    def __call__(self, input_ids, scores):
        import torch

        if self.mask is None or self.mask.shape[-1] != scores.shape[-1]:
            self.mask = torch.full((scores.shape[-1],), float("-inf"), device=scores.device)
            self.mask[self.ids] = 0.0
        return scores + self.mask


def weights_sha256(path: Path) -> str:
    """Hash of the weight files in a saved model directory (sorted by name)."""
    import hashlib

    h = hashlib.sha256()
    files = sorted(p for p in Path(path).iterdir() if p.suffix in (".safetensors", ".bin"))
    for p in files:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _torch_dtype(dtype: str):
    import torch

    if dtype in (None, "auto"):
        return "auto"
    return getattr(torch, dtype)


def load_handle(source: str | Path, ctx: "Context", *, name: str, revision: str | None = None,
                dtype: str = "auto", vocabulary: str | None = None, tokenizer_loader: Callable | None = None,
                chat_template: str | None = None, system_prompt: str | None = None) -> LMHandle:
    """Load a model directory or hub id with ``from_pretrained``; shared by tiny and hub families.

    A directory holding a LoRA adapter (``adapter_config.json``) is loaded onto its base and
    merged, so callers always get a plain model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ctx.setup_torch()
    src = Path(source) if not isinstance(source, Path) else source
    if src.is_dir() and (src / "adapter_config.json").exists():
        from peft import PeftModel

        base_src = json.loads((src / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = load_handle(base_src, ctx, name=name, revision=revision, dtype=dtype, vocabulary=vocabulary,
                           tokenizer_loader=tokenizer_loader, chat_template=chat_template, system_prompt=system_prompt)
        base.model = PeftModel.from_pretrained(base.model, str(src)).merge_and_unload()
        base.model.eval()
        return base
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype)}
    if revision and not src.is_dir():
        kwargs["revision"] = revision
    model = AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
    model.to(ctx.device).eval()
    if tokenizer_loader is not None:
        tokenizer = tokenizer_loader(source)
    elif src.is_dir() and (src / "tokenizer" / "tokenizer_config.json").is_file():
        # save_tokenizer's copy beside no model config: transformers 5 would otherwise swap a
        # Qwen2 tokenizer in for a qwen2 directory (a plugin's tiny test model), garbling it
        tokenizer = AutoTokenizer.from_pretrained(str(src / "tokenizer"))
    else:
        tkw = {"revision": revision} if revision and not src.is_dir() else {}
        tokenizer = AutoTokenizer.from_pretrained(str(source), **tkw)
    if chat_template:
        tokenizer.chat_template = chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LMHandle(model=model, tokenizer=tokenizer, name=name, system_prompt=system_prompt,
                    vocabulary=vocabulary)
