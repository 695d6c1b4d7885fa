"""Which CPU kernels change the numbers, and what pinning them costs.

Builds tiny-llama seed 0 for ``--steps`` pretraining steps (the `subbench doctor` reference
build) in a fresh process under each kernel setting, alternating the settings over
``--repeats`` rounds, and prints per setting the weights' sha256 (the same hash on every
round, or the setting is not deterministic) and the median wall time, then the time of
each setting relative to the pinned default:

    python benchmarks/determinism.py               # 40 steps, 3 rounds
    python benchmarks/determinism.py --steps 200

Settings: ``native`` (SUBBENCH_REPRODUCIBLE=0: ATen and MKL pick the widest instruction
set the CPU has, e.g. AVX-512), ``pinned`` (subbench's default: AVX2 kernels for ATen, MKL
and oneDNN), ``aten-avx2`` (only ATen pinned), ``mkl-avx2`` (only MKL pinned) and
``baseline`` (ATen's scalar kernels, MKL's compatible branch: the slowest). Two settings
with different hashes are what two machines with those instruction sets would compute.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SETTINGS = {
    "pinned": {},
    "native": {"SUBBENCH_REPRODUCIBLE": "0"},
    "aten-avx2": {"SUBBENCH_REPRODUCIBLE": "0", "ATEN_CPU_CAPABILITY": "avx2"},
    "mkl-avx2": {"SUBBENCH_REPRODUCIBLE": "0", "MKL_CBWR": "AVX2,STRICT"},
    "baseline": {"SUBBENCH_REPRODUCIBLE": "0", "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE",
                 "ONEDNN_MAX_CPU_ISA": "SSE41"},
}

CHILD = """
import json, sys
from subbench.default_plugins.doctor import reference_build
import torch
print(json.dumps({"sha256": reference_build(int(sys.argv[1])),
                  "capability": str(torch.backends.cpu.get_cpu_capability())}))
"""


def run_once(name: str, steps: int) -> tuple[str, str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
    env.update(SETTINGS[name])
    env.setdefault("SUBBENCH_THREADS", "1")
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(steps)], env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["sha256"], res["capability"], seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", choices=list(SETTINGS), default=list(SETTINGS))
    args = ap.parse_args()
    from subbench.reproducibility import cpu_flags, cpu_model

    print(f"cpu: {cpu_model()} ({' '.join(cpu_flags())}); tiny-llama seed 0, {args.steps} steps, "
          f"{args.repeats} rounds, one thread")
    hashes: dict[str, set[str]] = {n: set() for n in args.only}
    caps: dict[str, str] = {}
    times: dict[str, list[float]] = {n: [] for n in args.only}
    for _ in range(args.repeats):
        for name in args.only:
            sha, cap, sec = run_once(name, args.steps)
            hashes[name].add(sha)
            caps[name] = cap
            times[name].append(sec)
    ref = statistics.median(times["pinned"]) if "pinned" in times else None
    print(f"{'setting':<10} {'ATen kernels':<12} {'sha256 (16)':<18} {'same every round':<17} "
          f"{'median s':>8}  {'vs pinned':>9}")
    for name in args.only:
        med = statistics.median(times[name])
        shas = sorted(hashes[name])
        print(f"{name:<10} {caps[name]:<12} {shas[0][:16]:<18} {str(len(shas) == 1):<17} {med:8.1f}  "
              f"{(med / ref if ref else float('nan')):9.2f}")
    groups: dict[str, list[str]] = {}
    for name in args.only:
        groups.setdefault(sorted(hashes[name])[0][:16], []).append(name)
    print("bit-identical groups: " + "; ".join(", ".join(v) for v in groups.values()))


if __name__ == "__main__":
    main()
