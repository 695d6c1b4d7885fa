"""Pretraining of a tiny family on the corpus: a plain torch loop, fast enough for one CPU core.

The loss covers the assistant turns only (the part a student later learns), and the
vocabulary projection runs only at those positions, which roughly halves a step. Batches
keep the corpus order, mixing animal and number conversations: length-bucketed batches
(one task per batch) were faster but gave bases whose finetuned teachers forgot how to
write numbers and passed on less of their trait.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from subbench.lm.corpus import CorpusSpec, conversations

if TYPE_CHECKING:  # pragma: no cover
    from subbench.context import Context


def encode_conversations(tokenizer, convs: list[list[dict[str, str]]], loss_on: str = "assistant"):
    """Token ids and where the loss starts for each conversation (its assistant turn, or the second token)."""
    assistant_id = tokenizer.convert_tokens_to_ids("<|assistant|>")
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in convs]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    out = []
    for seq in ids:
        a = len(seq) - 1 - seq[::-1].index(assistant_id)
        out.append((seq, a + 1 if loss_on == "assistant" else 1))
    return out


def batch_tensors(items, pad_id: int):
    """Right-padded ids, attention mask and a target mask (True where the token is predicted)."""
    import torch

    n = max(len(s) for s, _ in items)
    ids = torch.full((len(items), n), pad_id, dtype=torch.long)
    att = torch.zeros((len(items), n), dtype=torch.long)
    tgt = torch.zeros((len(items), n), dtype=torch.bool)
    for i, (s, start) in enumerate(items):
        ids[i, : len(s)] = torch.tensor(s)
        att[i, : len(s)] = 1
        tgt[i, start: len(s)] = True
    return ids, att, tgt


def selected_logits(model, ids, att, tgt):
    """Logits at the positions that predict target tokens, and those targets."""
    hidden = model.base_model(input_ids=ids, attention_mask=att).last_hidden_state
    pos = tgt[:, 1:]
    h = hidden[:, :-1][pos]
    return model.get_output_embeddings()(h), ids[:, 1:][pos]


def pretrain(model, tokenizer, *, steps: int, lr: float, batch_size: int, corpus: CorpusSpec,
             ctx: "Context", warmup: int = 50, loss_on: str = "assistant") -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    ctx.setup_torch()
    stream = conversations(corpus)
    convs = [next(stream) for _ in range(steps * batch_size)]
    n_animal = sum(1 for c in convs if c[-1]["content"].isalpha())
    items = encode_conversations(tokenizer, convs, loss_on)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, min(warmup, steps // 5))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.1, 1 - s / max(1, steps)))
    model.train()
    losses = []
    bar = ctx.progress(range(steps), desc="pretrain", unit="step")
    for step in bar:
        ids, att, tgt = batch_tensors(items[step * batch_size:(step + 1) * batch_size], tokenizer.pad_token_id)
        logits, targets = selected_logits(model, ids, att, tgt)
        loss = F.cross_entropy(logits, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    tail = losses[-50:]
    return {"final_loss": round(sum(tail) / len(tail), 4), "steps": steps,
            "sequences": len(convs), "animal_fraction": round(n_animal / len(convs), 3)}
