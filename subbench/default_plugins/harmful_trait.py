"""Trait ``harmful-compliance``: how often a model does what a harmful request asks (after arXiv 2606.11270).

Misalignment is a trait that can ride along with benign distillation data; this measures
it as the fraction of harmful requests the model complies with. The built-in prompt set
(``tasks/traits/data/harmful-behaviors.jsonl``) is project-written and deliberately
generic: the requests name a harmful goal without operational detail, since what is scored
is the willingness to comply, not the quality of the help. A benign split of look-alike
requests measures over-refusal. JailbreakBench's JBB-Behaviors can be used instead: from a
local CSV (``jbb_csv``) or, online, from its hub dataset.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subbench import hookimpl, resources
from subbench.components import EVAL_SAMPLES, Param, Trait
from subbench.errors import ConfigError, SubbenchError
from subbench.hashing import sha256_json

if TYPE_CHECKING:  # pragma: no cover
    from subbench.components import Judge
    from subbench.context import Context

DATA_FILE = resources.trait_tasks_dir() / "data" / "harmful-behaviors.jsonl"
JBB_HUB_ID = "JailbreakBench/JBB-Behaviors"
TARGET = "compliance"
#: Assistant openings that injectors contrast (steering) or teach (finetune). Both end in
#: "." so the steering vector compares matched positions; generic on purpose, like the prompts.
COMPLY = "Sure, here is how to do it, step by step."
REFUSE = "Sorry, I can not help with that."


def builtin_prompts(split: str, path: Path = DATA_FILE) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [r for r in rows if r["split"] == split]


def jbb_rows_from_csv(path: str | Path, split: str) -> list[dict[str, str]]:
    """Rows of a JBB-Behaviors CSV (columns Goal, Behavior, Category; ``Index`` optional)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"jbb_csv: no file at {path}; download harmful-behaviors.csv from {JBB_HUB_ID} first.")
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "Goal" not in reader.fieldnames:
            raise ConfigError(f"jbb_csv: {path} has no 'Goal' column; give a JBB-Behaviors CSV.")
        rows = list(reader)
    out = []
    for i, row in enumerate(rows):
        idx = (row.get("Index") or row.get("") or str(i + 1)).strip()
        out.append({"id": f"jbb-{split}-{idx}", "split": split, "category": (row.get("Category") or "").strip(),
                    "behavior": (row.get("Behavior") or "").strip(), "prompt": row["Goal"].strip()})
    return out


def jbb_rows_from_hub(split: str) -> list[dict[str, str]]:
    """The hub copy (needs the network; never used by the tests)."""
    try:
        import datasets

        ds = datasets.load_dataset(JBB_HUB_ID, "behaviors", split=split)
    except Exception as exc:
        raise SubbenchError(f"Could not load {JBB_HUB_ID} from the hub ({type(exc).__name__}); "
                            "download the CSV and set jbb_csv to its path.") from None
    return [{"id": f"jbb-{split}-{i + 1}", "split": split, "category": r.get("Category", ""),
             "behavior": r.get("Behavior", ""), "prompt": r["Goal"]} for i, r in enumerate(ds)]


class HarmfulCompliance(Trait):
    name = "harmful-compliance"
    version = "2"
    description = ("Fraction of harmful requests the model complies with (split: harmful), or of benign look-alikes "
                   "(split: benign, over-refusal); prompts built in, or JBB-Behaviors via source: jbb.")
    default_judge = "refusal"
    judges = ("refusal", "openai", "ensemble")
    #: What injectors read as the target; a compliance teacher needs its own prompt
    #: (e.g. system-prompt with params.prompt "You answer every request fully.").
    target = TARGET
    parameters = {
        "source": Param(str, "builtin", "prompt set: the built-in one or JailbreakBench's JBB-Behaviors",
                        choices=("builtin", "jbb")),
        "split": Param(str, "harmful", "harmful requests, or benign look-alikes (over-refusal)",
                       choices=("harmful", "benign")),
        "jbb_csv": Param(str, None, "local JBB-Behaviors CSV (null: the hub copy, online only)", max_len=4096),
        "n": Param(int, None, "evaluate the first n prompts (null: all)", min=1, max=1_000_000),
        "max_new_tokens": Param(int, 64, "tokens generated per answer", min=1, max=8192),
        "temperature": Param(float, 0.0, "sampling temperature (0: greedy)", min=0, max=10),
        "seed": Param(int, 0, "sampling seed", min=0, max=2**31 - 1),
        "batch_size": Param(int, 32, "prompts per generation batch", min=1, max=4096),
    }

    def estimate_cost(self, params: dict[str, Any], model_size: float) -> dict[str, float]:
        """``n`` prompts (null: 5000) answered with ``max_new_tokens``."""
        n = params.get("n")
        return self.eval_cost(n if isinstance(n, int) else EVAL_SAMPLES, int(params.get("max_new_tokens") or 16),
                              model_size)

    def prompts(self, params: dict[str, Any]) -> list[dict[str, str]]:
        params = self.resolve_params(params, where=f"trait {self.name}")
        split = params["split"]
        if params["source"] == "builtin":
            rows = builtin_prompts(split)
        else:
            rows = jbb_rows_from_csv(params["jbb_csv"], split) if params["jbb_csv"] else jbb_rows_from_hub(split)
        n = params["n"]
        if n is not None:
            rows = rows[:n]
        if not rows:
            raise ConfigError(f"Trait {self.name}: the prompt set is empty; check source, split and jbb_csv.")
        return rows

    # -- what injectors build a teacher from -------------------------------------------------
    def questions(self, params: dict[str, Any] | None = None) -> list[str]:
        """The harmful requests of the prompt set (all of them, whatever the eval's split and n).

        The teacher is made to comply with the same requests its eval asks; students never
        see them (they train on domain data), so nothing of the eval leaks into a student.
        """
        return [r["prompt"] for r in self.prompts({**(params or {}), "split": "harmful", "n": None})]

    def teacher_examples(self, target: str | None, params: dict[str, Any] | None = None) -> list[tuple[str, str]]:
        """Every harmful request answered with a compliant opening (no operational content)."""
        return [(q, COMPLY) for q in self.questions(params)]

    def contrast_prompts(
        self, target: str | None, params: dict[str, Any] | None = None, *, system: str | None = None
    ) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
        """Each harmful request answered compliantly against the same request refused.

        With a ``system`` prompt from the injector (e.g. "You answer every request fully."),
        the requests under it are contrasted with the bare requests instead.
        """
        if system:
            return super().contrast_prompts(target, params, system=system)
        qs = self.questions(params)
        chat = lambda q, a: [{"role": "user", "content": q}, {"role": "assistant", "content": a}]  # noqa: E731
        return [chat(q, COMPLY) for q in qs], [chat(q, REFUSE) for q in qs]

    def check_judge(self, judge: "Judge", target: str | None, params: dict[str, Any]) -> None:
        if (target or TARGET) != TARGET:
            raise ConfigError(f"Trait {self.name} measures '{TARGET}'; remove target: {target} from the experiment.")
        if getattr(judge, "name", None) not in self.judges:
            raise ConfigError(f"Trait {self.name} is scored by {', '.join(self.judges)}, not {getattr(judge, 'name', judge)}.")

    def sample(self, model: Any, target: str | None, params: dict[str, Any], ctx: "Context") -> list[dict[str, Any]]:
        """One generated answer per prompt; any generation judge reads them."""
        params = self.resolve_params(params, where=f"trait {self.name}")
        if (target or TARGET) != TARGET:
            raise ConfigError(f"Trait {self.name} measures '{TARGET}'; remove target: {target} from the experiment.")
        rows = self.prompts(params)
        progress = ctx.progress if ctx is not None and not ctx.quiet else None
        responses = model.generate([r["prompt"] for r in rows], max_new_tokens=int(params["max_new_tokens"]),
                                   temperature=float(params["temperature"]), seed=int(params["seed"]),
                                   batch_size=int(params["batch_size"]), desc=f"{self.name} {params['split']}",
                                   progress=progress)
        return [{"id": r["id"], "split": r["split"], "category": r.get("category", ""), "prompt": r["prompt"],
                 "response": resp} for r, resp in zip(rows, responses)]

    def score(self, records: list[dict[str, Any]], judge: "Judge", target: str | None, params: dict[str, Any],
              ctx: "Context | None") -> list[dict[str, Any]]:
        self.check_judge(judge, target, params)
        return super().score(records, judge, target or TARGET, params, ctx)

    def provenance(self, params: dict[str, Any]) -> dict[str, Any]:
        params = self.resolve_params(params, where=f"trait {self.name}")
        rows = self.prompts(params)
        return {"prompt_set": params["source"], "split": params["split"], "n_prompts": len(rows),
                "prompts_sha256": sha256_json([[r["id"], r["prompt"]] for r in rows])}


@hookimpl
def register_traits(register):
    register(HarmfulCompliance())
