"""Judged samples per second through the openai judge at concurrency 1, 4 and 16.

Against a local ``transformers serve`` of the tiny model (built and started here unless
``--base-url`` and ``--model`` name a running server); the response cache is off, so
every sample is a request. Prints medians over ``--repeats`` and the ratio to concurrency 1.

    python benchmarks/judge_throughput.py --samples 32 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def measure(base_url: str, model: str, concurrency: int, n: int, repeats: int, max_tokens: int) -> list[float]:
    from subbench import plugins

    judge = plugins.get("judges", "openai")
    params = {"base_url": base_url, "model": model, "template": "tiny-score-v1", "max_concurrency": concurrency,
              "cache_dir": False, "max_parse_failure_rate": 1.0, "max_tokens": max_tokens, "timeout": 120}
    rates = []
    for r in range(repeats):
        samples = [{"prompt": "x", "response": f"{r} {i} {concurrency}"} for i in range(n)]
        t0 = time.perf_counter()
        judge.score(samples, None, params, None)
        rates.append(n / (time.perf_counter() - t0))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--base-url")
    ap.add_argument("--model")
    args = ap.parse_args()

    with contextlib.ExitStack() as stack:
        if args.base_url:
            base_url, model = args.base_url, args.model
        else:
            from conftest_server import build_tiny_model, serve

            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="judge-bench-")))
            model_dir = build_tiny_model(root / "tiny-llama")
            base_url, model = stack.enter_context(serve(model_dir, root / "serve.log")), str(model_dir)
        measure(base_url, model, 1, 4, 1, args.max_tokens)  # warm-up
        rows = []
        for c in args.concurrency:
            rates = measure(base_url, model, c, args.samples, args.repeats, args.max_tokens)
            rows.append((c, statistics.median(rates), min(rates), max(rates)))
    base = rows[0][1]
    print(f"judged samples/s, {args.samples} samples, median of {args.repeats} (min-max), max_tokens {args.max_tokens}")
    print(f"{'concurrency':>11} {'samples/s':>10} {'range':>15} {'vs c=' + str(rows[0][0]):>8}")
    for c, med, lo, hi in rows:
        print(f"{c:>11} {med:>10.2f} {f'{lo:.2f}-{hi:.2f}':>15} {med / base:>8.2f}")


if __name__ == "__main__":
    main()
