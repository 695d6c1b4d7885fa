"""The bridge to lm-eval: trait evals are plain lm-eval tasks run on a loaded :class:`LMHandle`.

Trait tasks live as YAML in ``tasks/traits`` so the same eval runs outside subbench
(``lm-eval run --include_path tasks/traits --tasks animal-preference ...``) and inside it
on a model already in memory. Passing the in-memory model matters: a steered teacher is
the base with a forward hook attached, and a system-prompt teacher is the base plus
``handle.system_prompt``; neither exists as a directory lm-eval could load.

Hub models with LoRA students need no special path here either: a family's ``load()``
merges the adapter before handing over the model. To evaluate an adapter directory with
lm-eval alone, use its ``peft=`` model argument::

    lm-eval run --include_path tasks/traits --tasks animal-preference --apply_chat_template \\
        --model hf --model_args pretrained=Qwen/Qwen2.5-7B-Instruct,revision=<sha>,peft=<adapter dir>

(from Python: ``HFLM(pretrained=model_id, revision=..., peft=adapter_dir)``), which loads
the base, applies the adapter with ``PeftModel.from_pretrained`` and evaluates it as is.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subbench import resources
from subbench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from subbench.context import Context
    from subbench.lm.handle import LMHandle

#: Where the trait task YAMLs live (``tasks/traits`` at the repository root).
TASKS_DIR = resources.trait_tasks_dir()


@contextlib.contextmanager
def _quiet_lm_eval(quiet: bool):
    """lm-eval logs every task build at INFO and warns on every custom loader; keep stderr readable.

    ``--quiet`` also silences lm-eval's progress bars (tqdm reads ``TQDM_DISABLE``).
    """
    if os.environ.get("SUBBENCH_DEBUG"):
        yield
        return
    loggers = [logging.getLogger(n) for n in ("lm_eval", "lm-eval")]
    before = [lg.level for lg in loggers]
    tqdm_before = os.environ.get("TQDM_DISABLE")
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        for lg, level in zip(loggers, before):
            lg.setLevel(level)
        if quiet:
            if tqdm_before is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = tqdm_before


def task_manager(include_path: Path | str = TASKS_DIR, metadata: dict[str, Any] | None = None):
    """A TaskManager that sees only the trait tasks (indexing lm-eval's own ~10k YAMLs takes seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(include_path), include_defaults=False, metadata=metadata or {})


def evaluate_task(
    handle: "LMHandle",
    task: str | list[str],
    *,
    limit: int | None = None,
    batch_size: int = 64,
    metadata: dict[str, Any] | None = None,
    include_path: Path | str = TASKS_DIR,
    seed: int = 1234,
    config: dict[str, dict[str, Any]] | None = None,
    ctx: "Context | None" = None,
) -> dict[str, Any]:
    """Run lm-eval task(s) on ``handle`` and return lm-eval's results dict (``samples`` included).

    Several tasks go through one ``evaluate`` call, so a trait that needs loglikelihoods
    and sampled answers wraps the model once. ``config`` overrides task settings by task
    name (e.g. ``{"animal-preference-gen": {"repeats": 10}}``).
    ``metadata`` reaches the task's dataset loader (the trait passes ``target``). The
    chat template is always applied and ``handle.system_prompt`` is the system turn, so
    the prompts are exactly those a user of the model would send.

    This is ``simple_evaluate`` minus its environment report: that report runs
    ``pip list`` and ``git describe`` in subprocesses (about 2 s of a 2.4 s tiny-model
    eval, far more on a loaded machine), and subbench records versions in its entries
    anyway. Seeding, zero-shot default and few-shot seed are done as simple_evaluate
    does; the caller's random states are restored afterwards, so an eval never shifts
    the sampling of the stage that follows it.
    """
    import random

    import numpy as np
    import torch
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM

    quiet = bool(ctx and ctx.quiet)
    py_state, np_state = random.getstate(), np.random.get_state()
    with _quiet_lm_eval(quiet), torch.random.fork_rng(devices=[]):
        manager = task_manager(include_path, metadata)
        tasks = [task] if isinstance(task, str) else list(task)
        for name in tasks:
            if name not in manager.all_subtasks:
                known = ", ".join(sorted(manager.all_subtasks)) or "none"
                raise ConfigError(f"Unknown lm-eval task '{name}' in {include_path}; known tasks: {known}.")
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        loaded = manager.load(tasks)
        for name, task_obj in loaded["tasks"].items():
            if task_obj.get_config("num_fewshot") is None:
                task_obj.set_config(key="num_fewshot", value=0)
            task_obj.set_fewshot_seed(seed=seed)
            for key, value in ((config or {}).get(name) or {}).items():
                task_obj.set_config(key=key, value=value)
        lm = HFLM(pretrained=handle.model, tokenizer=handle.tokenizer, batch_size=batch_size)
        try:
            results = evaluate(
                lm=lm,
                task_dict=loaded,
                limit=limit,
                log_samples=True,
                bootstrap_iters=0,
                apply_chat_template=True,
                fewshot_as_multiturn=True,
                system_instruction=handle.system_prompt,
            )
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
    if results is None:  # pragma: no cover - only on non-zero ranks of a distributed run
        raise ConfigError("lm-eval returned no results; run the evaluation in a single process.")
    return results


def run_task(
    handle: "LMHandle",
    task: str,
    *,
    limit: int | None = None,
    batch_size: int = 64,
    metadata: dict[str, Any] | None = None,
    ctx: "Context | None" = None,
) -> list[dict[str, Any]]:
    """lm-eval's logged samples for ``task`` on ``handle`` (one dict per eval document)."""
    results = evaluate_task(handle, task, limit=limit, batch_size=batch_size, metadata=metadata, ctx=ctx)
    return results["samples"][task]
