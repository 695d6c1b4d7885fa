"""Built-in mitigations: defences at each point of a cell (docs/mitigations.md).

data: ``shuffle-numbers``, ``dedupe`` (kept data stays inside the domain's filter, so a drop
in transfer is due to what they remove, not to malformed samples) and ``detector`` (drops
teacher-like samples at a fixed false-positive rate); decoding: ``min-p``, ``temperature``;
training: ``sgd``; activations: ``project-out``. The runner applies each to the teacher's
side and the control's alike.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import TYPE_CHECKING, Any

from subbench import hookimpl
from subbench.components import OPEN_WEIGHTS, Mitigation, Param
from subbench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from subbench.context import Context

_INT = re.compile(r"\d+")
_SPACES = re.compile(r"[^\S\n]+")


def _norm(text: str) -> str:
    """Case and runs of spaces do not make a response new; a newline (a format) does."""
    return _SPACES.sub(" ", text).strip().lower()


def _check_field(data: list[dict[str, Any]], field: str, name: str) -> None:
    for sample in data:
        if not isinstance(sample.get(field), str):
            raise ConfigError(
                f"Mitigation '{name}' needs a text field '{field}' in every sample "
                f"(sample {sample.get('id', '?')} has none); set `field:` to one the domain writes."
            )


class ShuffleNumbers(Mitigation):
    """Permute the numbers inside each response, keeping separators and brackets.

    Which numbers a teacher picks survives (a bag-of-numbers signal); the order and the
    copy structure the teacher's preference leaks through do not. A sample with fewer
    than two numbers is left as it is.
    """

    name = "shuffle-numbers"
    version = "1"
    description = "data: permute the numbers within each response (format kept)."
    parameters = {"field": Param(str, "response", "sample field whose numbers are shuffled", max_len=200)}

    def apply(
        self, data: list[dict[str, Any]], params: dict[str, Any], seed: int, ctx: "Context"
    ) -> list[dict[str, Any]]:
        params = self.resolve_params(params)
        field = params["field"]
        _check_field(data, field, self.name)
        out = []
        for index, sample in enumerate(data):
            text = sample[field]
            numbers = _INT.findall(text)
            key = f"{seed}:{sample.get('id', index)}".encode()
            rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
            rng.shuffle(numbers)
            it = iter(numbers)
            out.append({**sample, field: _INT.sub(lambda _m: next(it), text)})
        return out


class Dedupe(Mitigation):
    """Drop samples whose response repeats an earlier one (case and runs of spaces ignored).

    Repeated teacher answers weigh a student toward the teacher's modes; deduping removes
    that weight without touching any single sample. The first occurrence is kept, in order.
    """

    name = "dedupe"
    version = "1"
    description = "data: drop duplicate responses (keep the first)."
    parameters = {
        "field": Param(str, "response", "sample field compared", max_len=200),
        "with_prompt": Param(bool, False, "a duplicate must also repeat the prompt"),
    }

    def apply(
        self, data: list[dict[str, Any]], params: dict[str, Any], seed: int, ctx: "Context"
    ) -> list[dict[str, Any]]:
        params = self.resolve_params(params)
        field = params["field"]
        _check_field(data, field, self.name)
        seen: set[tuple[str, str]] = set()
        out = []
        for sample in data:
            key = (_norm(str(sample.get("prompt", ""))) if params["with_prompt"] else "", _norm(sample[field]))
            if key in seen:
                continue
            seen.add(key)
            out.append(dict(sample))
        return out


class MinP(Mitigation):
    """Threshold sampling: the teacher (and the control's base) never sample an unlikely token.

    A hidden preference rides on small shifts in the tail of the teacher's next-token
    distribution; cutting the tail removes the tokens where those shifts show most
    (owls.baulab.info: owl preference 60 % -> 28 % at p > 0.05). ``relative: true`` is
    min-p proper (threshold = p x the top token's probability).
    """

    name = "min-p"
    version = "1"
    point = "decoding"
    requires = frozenset({OPEN_WEIGHTS})  # the threshold reads the teacher's distribution
    cost = "free at generation time; narrows the data's diversity"
    description = "decoding: sample only tokens above a probability threshold (teacher and control base alike)."
    parameters = {
        "p": Param(float, 0.05, "probability threshold", min=0, min_open=True, max=1),
        "relative": Param(bool, False, "threshold relative to the top token's probability (min-p) instead of absolute"),
    }

    def decode(self, params: dict[str, Any]) -> dict[str, Any]:
        p = self.resolve_params(params)
        return {"min_p": p["p"]} if p["relative"] else {"min_prob": p["p"]}


class Temperature(Mitigation):
    """Sample the teacher's numbers at another temperature (lower: closer to its modes, less tail)."""

    name = "temperature"
    version = "1"
    point = "decoding"
    cost = "free at generation time; a low temperature repeats the teacher's modes"
    description = "decoding: generate at this sampling temperature (teacher and control base alike)."
    parameters = {"t": Param(float, 0.5, "sampling temperature (0: greedy)", min=0, max=10)}

    def decode(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"temperature": self.resolve_params(params)["t"]}


def _features(text: str) -> set[str]:
    """What a response shows on its surface: each number, adjacent pairs, first and last digits, count, format."""
    nums = _INT.findall(text)
    feats = {f"n:{n}" for n in nums} | {f"b:{a}>{b}" for a, b in zip(nums, nums[1:])}
    feats |= {f"d:{n[-1]}" for n in nums} | {f"d0:{n[0]}" for n in nums}
    feats |= {f"len:{len(nums)}", f"first:{nums[0] if nums else '-'}", "fmt:" + _SPACES.sub(" ", _INT.sub("#", text))[:12]}
    return feats


def _nb_fit(pos: list[set[str]], neg: list[set[str]], min_df: int) -> dict[str, float]:
    """Per-feature log odds of appearing in a teacher vs a base sample (Bernoulli, add-one).

    Document frequencies over each class's own sample count keep the weights fair when the
    teacher kept far fewer samples than the base; features seen fewer than ``min_df``
    times are noise at this size and get no weight.
    """
    import math
    from collections import Counter

    dp, dn = Counter(f for x in pos for f in x), Counter(f for x in neg for f in x)
    n_p, n_n = len(pos) + 2, len(neg) + 2
    return {f: math.log((dp[f] + 1) / n_p) - math.log((dn[f] + 1) / n_n)
            for f in set(dp) | set(dn) if dp[f] + dn[f] >= min_df}


def _nb_score(weights: dict[str, float], feats: set[str]) -> float:
    return sum(weights.get(f, 0.0) for f in feats)


def _auc(pos: list[float], neg: list[float]) -> float | None:
    """P(a teacher sample outscores a base sample), ties half (Mann-Whitney, by ranks)."""
    if not pos or not neg:
        return None
    allv = sorted([(v, 1) for v in pos] + [(v, 0) for v in neg])
    rank_sum, i = 0.0, 0
    while i < len(allv):
        j = i
        while j < len(allv) and allv[j][0] == allv[i][0]:
            j += 1
        mid = (i + j + 1) / 2  # average 1-based rank of the tie block
        rank_sum += mid * sum(1 for k in range(i, j) if allv[k][1])
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


class Detector(Mitigation):
    """Drop samples a classifier scores as teacher-like, at a fixed false-positive rate on base data.

    A naive-Bayes classifier on surface features of the numbers (each number, adjacent
    pairs, first/last digits, count, format) is fitted to the teacher's kept data against
    the base's (the control's) and cross-fitted in two folds, so no sample is scored by a
    classifier that saw it. The threshold is the (1 - fpr) quantile of the base samples'
    scores: ``fpr`` of the control's data is dropped too, and the teacher's rows above it
    are the detector's true positives (``tpr``, and the ``auc``, in the entry's
    ``mitigation_effect.utility.detector``).
    """

    name = "detector"
    version = "2"
    point = "data"
    cost = "one classifier fit per replicate (seconds); drops fpr of clean data"
    description = "data: drop teacher-like samples (number n-gram classifier) at a fixed false-positive rate."
    parameters = {
        "fpr": Param(float, 0.05, "share of base (control) samples the detector may flag", min=0, max=0.99),
        "min_df": Param(int, 5, "features seen in fewer samples carry no weight", min=1, max=100_000),
        "field": Param(str, "response", "sample field scored", max_len=200),
    }

    def apply_pair(self, teacher, control, params, seed, ctx):
        params = self.resolve_params(params)
        field = params["field"]
        _check_field(teacher, field, self.name)
        _check_field(control, field, self.name)
        ft = [_features(s[field]) for s in teacher]
        fc = [_features(s[field]) for s in control]
        st, sc = [0.0] * len(ft), [0.0] * len(fc)
        for fold in (0, 1):
            w = _nb_fit([f for i, f in enumerate(ft) if i % 2 != fold], [f for i, f in enumerate(fc) if i % 2 != fold],
                        params["min_df"])
            for i in range(fold, len(ft), 2):
                st[i] = _nb_score(w, ft[i])
            for i in range(fold, len(fc), 2):
                sc[i] = _nb_score(w, fc[i])
        ordered = sorted(sc)
        k = min(len(ordered) - 1, max(0, int(round((1 - params["fpr"]) * len(ordered))) - 1)) if ordered else 0
        threshold = ordered[k] if ordered and params["fpr"] > 0 else float("inf")
        keep_t = [dict(s) for s, x in zip(teacher, st) if x <= threshold]
        keep_c = [dict(s) for s, x in zip(control, sc) if x <= threshold]
        info = {"fpr": params["fpr"], "threshold": threshold if threshold != float("inf") else None,
                "tpr": 1 - len(keep_t) / max(1, len(teacher)), "control_dropped": 1 - len(keep_c) / max(1, len(control)),
                "auc": _auc(st, sc)}
        return keep_t, keep_c, info


class SGD(Mitigation):
    """Train the student (and its control) with plain SGD instead of Adam(W).

    arXiv 2606.00995 reports that subliminal transfer needs an adaptive optimizer. Plain
    SGD at Adam's learning rate barely moves a tiny model, so ``lr_scale`` multiplies the
    distiller's rate; the entry's ``utility.student_fit`` shows whether the student still
    learned the benign task.
    """

    name = "sgd"
    version = "1"
    point = "training"
    cost = "free; SGD may need more steps to fit the benign task"
    description = "training: distil with SGD instead of AdamW (student and control alike)."
    parameters = {"lr_scale": Param(float, 100.0, "multiple of the distiller's learning rate", min=0, min_open=True,
                                    max=1e6)}

    def train_params(self, distiller, dist_params, params):
        p = self.resolve_params(params)
        if "optimizer" not in distiller.param_specs() or "lr" not in distiller.param_specs():
            raise ConfigError(f"sgd needs a distiller with `optimizer` and `lr` parameters; '{distiller.name}' has none.")
        return {**dist_params, "optimizer": "sgd", "lr": float(dist_params["lr"]) * p["lr_scale"]}


class ProjectOut(Mitigation):
    """Remove the teacher's trait direction from the residual stream while it writes.

    The direction is the mean difference of the teacher's and its base's residual
    streams (last token, after ``layer``) on the trait's questions: what the injection
    added. A forward hook projects it out at every position, on the teacher and on the
    control's base alike, during generation and while a logit distiller reads their
    distributions (the necessity test of arXiv 2606.00995). Needs open weights.
    """

    name = "project-out"
    version = "1"
    point = "activations"
    cost = "one forward pass over the trait questions; a hook per generation step"
    description = "activations: project the teacher's trait direction out of the residual stream while it writes."
    parameters = {"layer": Param(int, None, "decoder layer (null: the middle one)", min=0, max=1000)}

    def activation_hooks(self, model, teacher, base, trait, target, params, ctx):
        from subbench.default_plugins.lm_injectors import chat_texts
        from subbench.lm.hooks import _hidden, decoder_layers, last_token_states, layer_module

        p = self.resolve_params(params)
        for m, who in ((model, "model"), (teacher, "teacher"), (base, "base")):
            if getattr(m, "model", None) is None or getattr(m, "tokenizer", None) is None:
                raise ConfigError(f"project-out needs open-weights models; the {who} here has no weights to hook.")
        layer = p["layer"] if p["layer"] is not None else len(decoder_layers(teacher.model)) // 2
        _, bare = trait.component.contrast_prompts(target, trait.params, system="-")
        texts_t, texts_b = chat_texts(teacher, bare), chat_texts(base, bare)
        diff = (last_token_states(teacher.model, teacher.tokenizer, texts_t, layer).mean(0)
                - last_token_states(base.model, base.tokenizer, texts_b, layer).mean(0)).float()
        unit = diff / diff.norm().clamp_min(1e-12)

        def hook(_module, _inputs, output):
            h = _hidden(output)
            u = unit.to(h.dtype).to(h.device)
            shifted = h - (h @ u).unsqueeze(-1) * u
            return (shifted,) + tuple(output[1:]) if isinstance(output, tuple) else shifted

        ctx.log(f"[project-out] direction at layer {layer}: norm {float(diff.norm()):.3f}")
        return [layer_module(model.model, layer).register_forward_hook(hook)]


@hookimpl
def register_mitigations(register):
    for m in (ShuffleNumbers(), Dedupe(), Detector(), MinP(), Temperature(), SGD(), ProjectOut()):
        register(m)
