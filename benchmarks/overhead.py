"""Harness overhead against raw loops, measured in one run on this machine.

Prints, with medians over --repeats:
  * generate stage: tokens/s of the numbers domain's `generate` (the harness path) vs a
    raw `model.generate` loop over the same prompts, batch size and sampling settings;
  * distill stage: seconds per optimizer step of the `sft` distiller vs a raw trl
    SFTTrainer on the same rows and arguments, and of the `logit` distiller vs a raw torch
    KD loop (teacher forward, student forward, KL, step) on the same batches;
  * `subbench --help` wall time (target <= 0.3 s);
  * with --quickstart: wall time and peak RSS of `subbench run quickstart` from scratch
    (target <= 4 GiB; this takes ~10 minutes).

Ratios are raw time / harness time (>= 0.95 means the harness costs at most 5 %).

    python benchmarks/overhead.py [--repeats 3] [--quickstart]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def median(xs):
    return statistics.median(xs)


def base_model(workdir: Path):
    """A tiny-llama base from the artifact store (built once, reused across runs)."""
    from subbench.artifacts import ArtifactStore
    from subbench.context import Context
    from subbench.pipeline import base_inputs, build_base
    from subbench.plugins import get

    ctx = Context(workdir=workdir, quiet=True)
    ctx.setup_torch()
    fam = get("families", "tiny-llama")
    params = fam.resolve_params({})
    store = ArtifactStore(workdir / "artifacts")
    art = store.produce("base", base_inputs(fam, 0, params), lambda tmp: build_base(fam, 0, params, tmp, ctx))
    return fam, art, ctx


def bench_generate(fam, art, ctx, n: int, repeats: int) -> dict:
    import torch

    from subbench.plugins import get

    dom = get("domains", "numbers")
    p = dom.resolve_params({})
    handle = fam.load(art.path, ctx)
    tok = handle.tokenizer
    users = dom.prompts(n, p, 0)

    def harness():
        t = time.perf_counter()
        rows = list(dom.generate(handle, n, p, 0, ctx))
        dt = time.perf_counter() - t
        return [r["response"] for r in rows], dt

    def raw():
        """What a user would write: chat template, left padding, generate, decode."""
        t = time.perf_counter()
        tok.padding_side = "left"
        texts = [handle.chat_text(u) for u in users]
        bs = int(p["batch_size"])
        out_text = []
        for b, i in enumerate(range(0, len(texts), bs)):
            enc = tok(texts[i:i + bs], return_tensors="pt", padding=True, add_special_tokens=False)
            torch.manual_seed(b)  # the harness seeds batch b of seed 0 the same way
            with torch.no_grad():
                out = handle.model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                            max_new_tokens=int(p["max_new_tokens"]), pad_token_id=tok.pad_token_id,
                                            eos_token_id=tok.eos_token_id)
            out_text += [x.strip() for x in tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
        return out_text, time.perf_counter() - t

    def count(texts):
        return sum(len(tok(x, add_special_tokens=False)["input_ids"]) for x in texts)

    h, r, same = [], [], True
    for _ in range(repeats):
        ht, dt = harness()
        h.append(count(ht) / dt)
        rt, dt = raw()
        r.append(count(rt) / dt)
        same = same and ht == rt
    return {"harness_tok_s": median(h), "raw_tok_s": median(r), "ratio": median(h) / median(r), "identical_outputs": same}


def bench_distill(fam, art, ctx, n: int, steps: int, repeats: int) -> dict:
    import torch
    import torch.nn.functional as F

    from subbench.components import ModelRef
    from subbench.lm.train import kd_collate, kd_features, training_args
    from subbench.plugins import get

    dom = get("domains", "numbers")
    teacher = fam.load(art.path, ctx)
    rows = [r for r in dom.generate(teacher, n, {}, 1, ctx) if dom.filter(r, {}) is None]
    ref = ModelRef(fam, art.path, art.meta.get("result", {}))
    out = {}
    tmp = Path(tempfile.mkdtemp(prefix="subbench-bench-"))

    # sft: the distiller vs trl's SFTTrainer used directly
    sft = get("distillers", "sft")
    sp = {"max_steps": steps, "batch_size": 32}

    def sft_harness():
        t = time.perf_counter()
        fit = sft.distill(ref, rows, None, sft.resolve_params(sp), 0, tmp / "sft-h", ctx)["fit"]
        return (time.perf_counter() - t) / fit["steps"]

    def sft_raw():
        import transformers
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        t = time.perf_counter()
        handle = fam.load(art.path, ctx)
        data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                   "completion": [{"role": "assistant", "content": r["response"]}]} for r in rows])
        args = training_args(SFTConfig, tmp / "sft-r", ctx, seed=0, lr=1e-4, optimizer="adamw", batch_size=32, epochs=1,
                             max_steps=steps, completion_only_loss=True, max_length=512, packing=False)
        transformers.logging.set_verbosity_error()
        trainer = SFTTrainer(model=handle.model, args=args, train_dataset=data, processing_class=handle.tokenizer)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.train()
        handle.model.save_pretrained(str(tmp / "sft-r"))
        return (time.perf_counter() - t) / trainer.state.global_step

    # logit: the distiller vs a hand-written KD loop on the same features
    logit = get("distillers", "logit")
    lp = {"max_steps": steps, "batch_size": 64}

    def logit_harness():
        t = time.perf_counter()
        fit = logit.distill(ref, rows, teacher, logit.resolve_params(lp), 0, tmp / "kd-h", ctx)["fit"]
        return (time.perf_counter() - t) / fit["steps"]

    def logit_raw():
        t = time.perf_counter()
        student = fam.load(art.path, ctx)
        feats = kd_features(student, teacher, rows)
        support = torch.tensor(sorted({x for f in feats for x in f["input_ids"][f["prompt_len"]:]}))
        collate = kd_collate(student.tokenizer.pad_token_id)
        model = student.model
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        g = torch.Generator().manual_seed(0)
        done = 0
        while done < steps:
            perm = torch.randperm(len(feats), generator=g).tolist()
            for i in range(0, len(perm), 64):
                b = collate([feats[j] for j in perm[i:i + 64]])
                with torch.no_grad():
                    tl = teacher.model(input_ids=b["teacher_input_ids"], attention_mask=b["teacher_attention_mask"]).logits
                    tl = tl[:, :-1][b["teacher_response_mask"]][:, support]
                sl = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1][b["response_mask"]][:, support]
                loss = F.kl_div(F.log_softmax(sl, -1), F.log_softmax(tl, -1), log_target=True, reduction="batchmean")
                opt.zero_grad()
                loss.backward()
                opt.step()
                done += 1
                if done >= steps:
                    break
        model.save_pretrained(str(tmp / "kd-r"))
        return (time.perf_counter() - t) / steps

    for name, harness, raw in (("sft", sft_harness, sft_raw), ("logit", logit_harness, logit_raw)):
        h, r = [], []
        for _ in range(repeats):
            h.append(harness())
            r.append(raw())
        out[name] = {"harness_s_per_step": median(h), "raw_s_per_step": median(r), "ratio": median(r) / median(h)}
    out["rows"] = len(rows)
    return out


def bench_help(repeats: int) -> dict:
    times = []
    for _ in range(max(5, repeats)):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "subbench", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return {"median_s": median(times), "min_s": min(times)}


def bench_quickstart() -> dict:
    with tempfile.TemporaryDirectory(prefix="subbench-qs-") as d:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "subbench", "run", "quickstart", "--workdir", f"{d}/w", "--out", f"{d}/r", "-q"],
                       check=True, capture_output=True)
        wall = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "subbench", "run", "quickstart", "--workdir", f"{d}/w", "--out", f"{d}/r", "-q"],
                       check=True, capture_output=True)
        cached = time.perf_counter() - t
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest single process
    return {"wall_s": wall, "cached_rerun_s": cached, "peak_rss_gib": peak_kib / 1024 / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=512, help="prompts for the generate benchmark")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps for the distill benchmark")
    ap.add_argument("--workdir", type=Path, default=Path(".subbench-bench"))
    ap.add_argument("--quickstart", action="store_true", help="also time the quickstart and its peak RSS (~10 min)")
    ap.add_argument("--only", choices=["help", "generate", "distill"], help="run one figure")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("SUBBENCH_THREADS", "1")

    results = {}
    if a.only in (None, "help"):
        results["help"] = bench_help(a.repeats)
    if a.only != "help":
        fam, art, ctx = base_model(a.workdir)
    if a.only in (None, "generate"):
        results["generate"] = bench_generate(fam, art, ctx, a.samples, a.repeats)
    if a.only in (None, "distill"):
        results["distill"] = bench_distill(fam, art, ctx, a.samples, a.steps, a.repeats)
    if a.quickstart:
        results["quickstart"] = bench_quickstart()
    if a.json:
        print(json.dumps(results, indent=2))
        return
    g, d = results.get("generate"), results.get("distill")
    print(f"{'figure':<44} {'harness':>12} {'raw':>12} {'ratio':>7}  target")
    if g:
        print(f"{'generate: tokens/s':<44} {g['harness_tok_s']:>12.0f} {g['raw_tok_s']:>12.0f} {g['ratio']:>7.2f}  >= 0.95"
              f"  (same samples: {g['identical_outputs']})")
    for k in ("sft", "logit") if d else ():
        x = d[k]
        print(f"{'distill ' + k + ': s/step (stage incl. load+save)':<44} {x['harness_s_per_step']:>12.3f} {x['raw_s_per_step']:>12.3f} {x['ratio']:>7.2f}  >= 0.95")
    if "help" in results:
        h = results["help"]
        print(f"{'subbench --help: s (median)':<44} {h['median_s']:>12.3f} {'':>12} {'':>7}  <= 0.3")
    if "quickstart" in results:
        q = results["quickstart"]
        print(f"{'quickstart: wall s, first run':<44} {q['wall_s']:>12.0f}")
        print(f"{'quickstart: wall s, cached re-run':<44} {q['cached_rerun_s']:>12.2f} {'':>12} {'':>7}  <= 5")
        print(f"{'quickstart: peak RSS GiB (largest process)':<44} {q['peak_rss_gib']:>12.2f} {'':>12} {'':>7}  <= 4")
    rows = f"{d['rows']} kept rows, {a.steps} steps; " if d else ""
    print(f"(medians of {a.repeats}; {rows}machine load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
