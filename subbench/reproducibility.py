"""Bit-identical CPU results across x86-64 machines: which kernels run, and what is recorded.

PyTorch picks its vectorised CPU kernels by the instruction sets the processor has
(``AVX512`` here, ``AVX2`` on many others), and MKL picks its matrix kernels the same way.
The kernels round differently, and training amplifies the difference: a tiny base
pretrained for 40 steps already has other weights under ATen's AVX-512 and AVX2 kernels
(``python benchmarks/determinism.py`` shows it). subbench therefore pins, before torch is
imported, the kernels every x86-64 machine of the last decade has:

- ``ATEN_CPU_CAPABILITY=avx2``: ATen's own kernels (elementwise, reductions, softmax, norms);
- ``MKL_CBWR=AVX2,STRICT``: MKL's conditional numerical reproducibility branch (matmuls);
- ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN's kernels.

Values the user set are kept; ``SUBBENCH_REPRODUCIBLE=0`` turns the pinning off (faster on
AVX-512 machines, no longer bit-identical to the published hashes). One torch thread per
process (``SUBBENCH_THREADS``) and flushed denormals are set by ``Context.setup_torch``.
What was in effect goes into every entry's ``environment`` and ``subbench doctor`` prints it.
"""

from __future__ import annotations

import os
import platform
from typing import Any

PINNED: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}


def enabled() -> bool:
    return os.environ.get("SUBBENCH_REPRODUCIBLE", "1").strip().lower() not in ("0", "false", "no", "off")


def pin() -> None:
    """Set the pinned kernel choices (before torch is imported; the user's own values win)."""
    if not enabled():
        return
    for key, value in PINNED.items():
        os.environ.setdefault(key, value)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> list[str]:
    """The vector instruction sets the processor reports (avx2, avx512f, ...)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw",
                                                            "avx512_vnni", "avx512_bf16", "amx_tile"))
    except OSError:
        pass
    return []


def settings() -> dict[str, str | None]:
    """What governs the numbers on this machine now (strings, for the entry's ``environment``)."""
    return {
        "cpu_model": cpu_model(),
        "reproducible": "1" if enabled() else "0",
        "threads": os.environ.get("SUBBENCH_THREADS") or "1",
        **{k.lower(): os.environ.get(k) for k in PINNED},
    }


def report() -> dict[str, Any]:
    """``settings()`` plus the processor's instruction sets and torch's version, for ``subbench doctor``."""
    import torch

    out: dict[str, Any] = dict(settings())
    out["cpu_flags"] = " ".join(cpu_flags()) or "unknown"
    out["torch"] = torch.__version__
    out["cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    out["torch_threads"] = str(torch.get_num_threads())
    return out
