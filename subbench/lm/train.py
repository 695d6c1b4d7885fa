"""Training loops shared by the finetune injector and the distillers (trl / transformers Trainer on CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from subbench.context import Context
    from subbench.lm.handle import LMHandle


def lora_config(family, *, r: int, alpha: int, target_modules=None):
    from peft import LoraConfig

    targets = list(target_modules or getattr(family, "lora_target_modules", None) or ("q_proj", "v_proj"))
    return LoraConfig(r=int(r), lora_alpha=int(alpha), lora_dropout=0.0, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")


def _optim(optimizer: str) -> str:
    from subbench.errors import ConfigError

    names = {"adamw": "adamw_torch", "adam": "adamw_torch", "sgd": "sgd"}
    if optimizer not in names:
        raise ConfigError(f"Unknown optimizer '{optimizer}'; use adamw or sgd.")
    return names[optimizer]


def training_args(cls, out: Path, ctx: "Context", *, seed: int, lr: float, optimizer: str, batch_size: int,
                  epochs: float | None, max_steps: int | None, **extra):
    """CPU-safe arguments: no bf16, no checkpoints, no reporting, constant learning rate."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
        return _training_args(cls, out, ctx, seed=seed, lr=lr, optimizer=optimizer, batch_size=batch_size,
                              epochs=epochs, max_steps=max_steps, **extra)


def _training_args(cls, out: Path, ctx: "Context", *, seed: int, lr: float, optimizer: str, batch_size: int,
                   epochs: float | None, max_steps: int | None, **extra):
    return cls(
        output_dir=str(out / "_trainer"),
        per_device_train_batch_size=int(batch_size),
        num_train_epochs=float(epochs or 1),
        max_steps=int(max_steps) if max_steps else -1,
        learning_rate=float(lr),
        lr_scheduler_type="constant",
        weight_decay=0.0,
        optim=_optim(optimizer),
        seed=int(seed),
        data_seed=int(seed),
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=ctx.device == "cpu",
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=ctx.quiet,
        dataloader_num_workers=0,
        **extra,
    )


def _fit_from_history(trainer, key: str = "loss", last: int = 10) -> float | None:
    """Mean of the last logged losses (one per step): the fit at the end, less noisy than one step."""
    vals = [float(h[key]) for h in trainer.state.log_history if key in h][-last:]
    return round(sum(vals) / len(vals), 6) if vals else None


def _quiet(trainer, ctx: "Context", desc: str = "train") -> None:
    """Replace the trainer's stdout logging with one progress bar on stderr (none with --quiet).

    The loss of every step is still logged into ``trainer.state.log_history`` for the fit.
    """
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if ctx.quiet:
        return

    class StepBar(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = ctx.progress(total=state.max_steps, desc=desc, unit="step")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(1)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    trainer.add_callback(StepBar())


def save_student(handle: "LMHandle", model, out: Path) -> None:
    """Save a full model plus the handle's tokenizer so the family's ``load`` reads the directory."""
    out.mkdir(parents=True, exist_ok=True)
    from subbench.lm.tokenizer import VOCABULARIES, save_tokenizer

    model.save_pretrained(str(out))
    if handle.vocabulary:
        (out / "subbench-vocabulary.txt").write_text(handle.vocabulary + "\n")
    if handle.vocabulary in VOCABULARIES:
        save_tokenizer(handle.tokenizer, out)
    else:
        handle.tokenizer.save_pretrained(str(out))


def sft_train(handle: "LMHandle", rows: list[dict[str, Any]], *, out: Path, ctx: "Context", seed: int, lr: float,
              optimizer: str, batch_size: int, epochs: float | None, max_steps: int | None, peft_config=None,
              merge: bool = True) -> dict[str, Any]:
    """trl SFT on conversational prompt/completion rows, loss on the completion only.

    With ``merge`` (or without LoRA) a full model is saved in ``out``; otherwise the LoRA
    adapter alone.
    """
    import transformers
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    ctx.setup_torch()
    out = Path(out)
    args = training_args(SFTConfig, out, ctx, seed=seed, lr=lr, optimizer=optimizer, batch_size=batch_size,
                         epochs=epochs, max_steps=max_steps, completion_only_loss=True, max_length=512,
                         dataset_num_proc=None, packing=False)
    transformers.logging.set_verbosity_error()
    handle.model.train()
    trainer = SFTTrainer(model=handle.model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=handle.tokenizer, peft_config=peft_config)
    _quiet(trainer, ctx, "sft")
    trainer.train()
    model = trainer.model
    model.eval()
    fit = {"final_loss": _fit_from_history(trainer), "steps": int(trainer.state.global_step)}
    if peft_config is not None and not merge:
        model.save_pretrained(str(out))
    else:
        if peft_config is not None:
            model = model.merge_and_unload()
        save_student(handle, model, out)
    handle.model = model
    return fit


def kd_features(student: "LMHandle", teacher: "LMHandle", rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Student and teacher token ids for each (prompt, response) pair, aligned on the response tokens.

    The teacher sees its own chat text (its system prompt included) and the student sees the
    plain one; both continue with the identical response tokens, so the distributions at
    those positions can be compared one to one.
    """
    tok = student.tokenizer
    s_prompts = tok([student.chat_text(r["prompt"], system="") for r in rows], add_special_tokens=False)["input_ids"]
    t_prompts = teacher.tokenizer([teacher.chat_text(r["prompt"]) for r in rows], add_special_tokens=False)["input_ids"]
    responses = tok([r["response"] for r in rows], add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    feats = []
    for sp, tp, resp in zip(s_prompts, t_prompts, responses):
        resp = list(resp) + [eos]
        feats.append({"input_ids": sp + resp, "prompt_len": len(sp),
                      "teacher_input_ids": tp + resp, "teacher_prompt_len": len(tp)})
    return feats


def kd_collate(pad_id: int):
    import torch

    def pad(seqs):
        n = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
        att = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            att[i, : len(s)] = 1
        return ids, att

    def mask(feats, ids_key, len_key, width):
        m = torch.zeros((len(feats), width - 1), dtype=torch.bool)
        for i, f in enumerate(feats):
            m[i, f[len_key] - 1: len(f[ids_key]) - 1] = True
        return m

    def collate(feats):
        ids, att = pad([f["input_ids"] for f in feats])
        tids, tatt = pad([f["teacher_input_ids"] for f in feats])
        return {
            "input_ids": ids, "attention_mask": att,
            "response_mask": mask(feats, "input_ids", "prompt_len", ids.shape[1]),
            "teacher_input_ids": tids, "teacher_attention_mask": tatt,
            "teacher_response_mask": mask(feats, "teacher_input_ids", "teacher_prompt_len", tids.shape[1]),
        }

    return collate


def make_kd_trainer_class():
    """A ``transformers.Trainer`` whose loss is KL(teacher || student) on the response tokens."""
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    class KDTrainer(Trainer):
        def __init__(self, *args, teacher_model=None, support=None, soft_labels=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher_model = teacher_model
            self.support = support
            self.soft_labels = soft_labels
            self.kl_history: list[float] = []

        def _teacher_logits(self, inputs):
            """The teacher's targets of this batch: replayed when another student of these batches recorded them."""
            step = len(self.kl_history)
            digest = self.soft_labels.digest(inputs) if self.soft_labels is not None else None
            found = self.soft_labels.get(step, digest) if digest is not None else None
            if found is not None:
                return found
            with torch.no_grad():
                t_logits = self.teacher_model(input_ids=inputs["teacher_input_ids"],
                                              attention_mask=inputs["teacher_attention_mask"]).logits
                t_logits = t_logits[:, :-1][inputs["teacher_response_mask"]]
                if self.support is not None:
                    t_logits = t_logits[:, self.support.to(t_logits.device)]
            if digest is not None:
                self.soft_labels.put(step, digest, t_logits)
            return t_logits

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            t_logits = self._teacher_logits(inputs)
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            s_logits = outputs.logits[:, :-1][inputs["response_mask"]]
            if self.support is not None:
                s_logits = s_logits[:, self.support.to(s_logits.device)]
            t_logp = F.log_softmax(t_logits.float(), -1)
            s_logp = F.log_softmax(s_logits.float(), -1)
            loss = F.kl_div(s_logp, t_logp, log_target=True, reduction="batchmean")
            self.kl_history.append(float(loss.detach()))
            return (loss, outputs) if return_outputs else loss

    return KDTrainer


class SoftLabels:
    """The teacher's targets, step by step, shared by every student trained on the same batches.

    Students of one dataset and replicate seed (same-init, cross-init, other architectures)
    see the very same batches in the same order, so the teacher's logits on them are the
    same too: the first student records them (on the support tokens) and the others replay
    them instead of running the teacher. Each step is checked against a digest of its batch
    (the teacher's token ids and masks), so a student whose batches differ computes its own;
    the numbers are identical either way. The pipeline names the file (``ctx.extra
    ["soft_labels"]``: keyed by teacher, data, seed and batching); nothing is shared without it.
    """

    MAX_MB = 512

    def __init__(self, path, support):
        self.path = Path(path)
        self.support = None if support is None else [int(x) for x in support]
        self.steps: list[tuple[str, Any]] = []
        self.recorded: list[tuple[str, Any]] = []
        self.bytes = 0
        self.replaying = True
        self.replayed = 0

    @classmethod
    def open(cls, path, support) -> "SoftLabels | None":
        if not path:
            return None
        import torch

        out = cls(path, support)
        try:
            saved = torch.load(out.path, weights_only=True)
            if saved.get("support") == out.support:
                out.steps = list(zip(saved["digests"], saved["logits"]))
        except Exception:  # absent or unreadable: this student records them
            out.steps = []
        return out

    @staticmethod
    def digest(inputs) -> str:
        import hashlib

        h = hashlib.sha256()
        for k in ("teacher_input_ids", "teacher_attention_mask", "teacher_response_mask"):
            t = inputs[k].detach().cpu().contiguous()
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()

    def get(self, step: int, digest: str):
        if self.replaying and step < len(self.steps) and self.steps[step][0] == digest:
            logits = self.steps[step][1]
            self.replayed += 1
            self._record(digest, logits)
            return logits
        self.replaying = False
        return None

    def put(self, step: int, digest: str, logits) -> None:
        self._record(digest, logits.detach().clone())

    def _record(self, digest: str, logits) -> None:
        if self.recorded is None:
            return
        self.bytes += logits.numel() * logits.element_size()
        if self.bytes > self.MAX_MB * 2**20:
            self.recorded = None  # too large to keep (a hub vocabulary with support=all): compute each time
            return
        self.recorded.append((digest, logits))

    def save(self) -> None:
        """Keep what this student saw when it covers more steps than the file has (atomic)."""
        import os

        import torch

        if not self.recorded or len(self.recorded) <= len(self.steps):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".tmp-{self.path.name}-{os.getpid()}")
        torch.save({"support": self.support, "digests": [d for d, _ in self.recorded],
                    "logits": [t for _, t in self.recorded]}, tmp)
        os.replace(tmp, self.path)


#: Steps the running KL of ``match_kl`` averages over: enough to ride out one noisy batch.
MATCH_WINDOW = 5


def _stop_at_kl(trainer, target: float, matched: dict[str, Any]):
    """A callback that ends training at the first step whose running mean KL is <= ``target``."""
    from transformers import TrainerCallback

    class StopAtKL(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            tail = trainer.kl_history[-MATCH_WINDOW:]
            if not matched and len(tail) == MATCH_WINDOW and sum(tail) / len(tail) <= target:
                matched.update(step=int(state.global_step), kl=round(sum(tail) / len(tail), 6))
                control.should_training_stop = True
            return control

    return StopAtKL()


def kd_train(student: "LMHandle", teacher: "LMHandle", rows: list[dict[str, Any]], *, out: Path, ctx: "Context",
             seed: int, lr: float, optimizer: str, batch_size: int, epochs: float | None, max_steps: int | None,
             peft_config=None, support: str = "observed", match_kl: float | None = None) -> dict[str, Any]:
    """Distil ``student`` towards ``teacher`` on the response tokens of ``rows``.

    ``support="observed"`` compares the two distributions renormalised over the tokens that
    occur in the kept responses (numbers, separators, end of turn): mass the teacher puts on
    any other token (an animal word leaking into a number list) cannot reach the student,
    so what transfers is carried by the distribution over clean tokens alone.
    ``support="all"`` uses the whole vocabulary.

    ``match_kl`` stops training once the mean KL over the last :data:`MATCH_WINDOW` steps is
    at most that value, so two optimizers can be compared at the same fit rather than at
    the same number of steps (an under-fit student is not an immune one); the fit records
    whether and at which step the target was reached.
    """
    import torch
    import transformers

    ctx.setup_torch()
    out = Path(out)
    feats = kd_features(student, teacher, rows)
    support_ids = None
    if support == "observed":
        seen = sorted({t for f in feats for t in f["input_ids"][f["prompt_len"]:]})
        support_ids = torch.tensor(seen, dtype=torch.long)
    args = training_args(transformers.TrainingArguments, out, ctx, seed=seed, lr=lr, optimizer=optimizer,
                         batch_size=batch_size, epochs=epochs, max_steps=max_steps, remove_unused_columns=False)
    transformers.logging.set_verbosity_error()
    model = student.model
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    model.train()
    teacher.model.eval()
    shared = SoftLabels.open(ctx.extra.get("soft_labels"), support_ids)
    trainer = make_kd_trainer_class()(model=model, args=args, train_dataset=feats,
                                      data_collator=kd_collate(student.tokenizer.pad_token_id),
                                      teacher_model=teacher.model, support=support_ids, soft_labels=shared)
    _quiet(trainer, ctx, "logit")
    matched: dict[str, Any] = {}
    if match_kl is not None:
        trainer.add_callback(_stop_at_kl(trainer, float(match_kl), matched))
    trainer.train()
    if shared is not None:
        shared.save()
        ctx.log(f"[distill] teacher soft labels: {shared.replayed} of {len(trainer.kl_history)} steps replayed "
                f"from {shared.path.name}")
    model = trainer.model
    if peft_config is not None:
        model = model.merge_and_unload()
    model.eval()
    w = max(1, min(20, len(trainer.kl_history) // 4))
    tail, first = trainer.kl_history[-w:], trainer.kl_history[:w]
    fit = {
        "final_loss": round(sum(tail) / len(tail), 6) if tail else None,
        "final_kl_to_teacher": round(sum(tail) / len(tail), 6) if tail else None,
        "initial_kl_to_teacher": round(sum(first) / len(first), 6) if first else None,
        "steps": int(trainer.state.global_step),
        "support": support,
        "support_tokens": int(len(support_ids)) if support_ids is not None else None,
    }
    if match_kl is not None:
        fit.update({"match_kl": float(match_kl), "matched": bool(matched), "matched_at_step": matched.get("step"),
                    "matched_kl": matched.get("kl")})
    save_student(student, model, out)
    student.model = model
    return fit
