"""Steering: read and shift the residual stream at one decoder layer through forward hooks.

Decoder layers return a plain tensor in transformers 5 and a tuple in older versions and
some remote-code models; every hook here accepts both.
"""

from __future__ import annotations

from typing import Any


def decoder_layers(model) -> Any:
    """The list of decoder layers of a causal LM (Llama, Qwen2, Mistral, GPT-2 style)."""
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    from subbench.errors import SubbenchError

    raise SubbenchError(f"Cannot find the decoder layers of {type(model).__name__}; steering needs a Llama/Qwen2/GPT-style model.")


def layer_module(model, layer: int):
    layers = decoder_layers(model)
    if not -len(layers) <= layer < len(layers):
        from subbench.errors import ConfigError

        raise ConfigError(f"Steering layer {layer} does not exist; the model has {len(layers)} layers (0-{len(layers) - 1}).")
    return layers[layer]


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


def add_steering_hook(model, layer: int, vector, strength: float, positions: str = "all"):
    """Add ``strength * vector`` to the layer's output; returns the hook handle.

    ``positions="prompt"`` steers only forward passes that read more than one new token
    (the prompt's prefill, teacher-forced passes) and leaves cached decoding steps, one
    generated token each, unsteered.
    """
    module = layer_module(model, layer)

    def hook(_module, _inputs, output):
        h = _hidden(output)
        if positions == "prompt" and h.shape[1] == 1:
            return output
        shifted = h + (strength * vector).to(h.dtype).to(h.device)
        if isinstance(output, tuple):
            return (shifted,) + tuple(output[1:])
        return shifted

    return module.register_forward_hook(hook)


def last_token_states(model, tokenizer, texts: list[str], layer: int, batch_size: int = 32):
    """Residual stream after ``layer`` at each text's last token (left padding keeps it at -1)."""
    import torch

    module = layer_module(model, layer)
    captured: list = []

    def hook(_module, _inputs, output):
        captured.append(_hidden(output)[:, -1].detach())

    handle = module.register_forward_hook(hook)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        device = next(model.parameters()).device
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                model(**enc.to(device))
    finally:
        handle.remove()
        tokenizer.padding_side = old_side
    return torch.cat(captured)


def mean_residual_norm(model, tokenizer, texts: list[str], layer: int, batch_size: int = 32) -> float:
    """Mean L2 norm of the residual stream after ``layer`` over every (non-padding) token of ``texts``.

    The yardstick a ``scale: norm`` steering vector is sized against: k x this norm is a
    shift comparable across layers and models, where a raw mean difference is not.
    """
    import torch

    module = layer_module(model, layer)
    captured: list = []

    def hook(_module, _inputs, output):
        captured.append(_hidden(output).detach())

    handle = module.register_forward_hook(hook)
    total, count = 0.0, 0
    try:
        device = next(model.parameters()).device
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            captured.clear()
            with torch.no_grad():
                model(**enc.to(device))
            norms = captured[0].float().norm(dim=-1)
            mask = enc["attention_mask"].bool()
            total += float(norms[mask].sum())
            count += int(mask.sum())
    finally:
        handle.remove()
    return total / max(1, count)
