"""`subbench doctor` and the pinned CPU kernels: the reference build is bit-identical to the published hash."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from subbench.cli import build_cli
from subbench.default_plugins import doctor
from subbench.reproducibility import cpu_flags, settings


def test_kernels_are_pinned_before_torch_loads_and_recorded():
    code = ("import subbench, torch, json; from subbench.reproducibility import settings; "
            "print(json.dumps([str(torch.backends.cpu.get_cpu_capability()), settings()]))")
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA",
                                                            "SUBBENCH_REPRODUCIBLE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    capability, recorded = json.loads(out.stdout)
    if "avx2" in cpu_flags():
        assert capability == "AVX2"
    assert recorded["aten_cpu_capability"] == "avx2" and recorded["mkl_cbwr"] == "AVX2,STRICT"
    assert recorded["reproducible"] == "1" and recorded["cpu_model"]
    off = subprocess.run([sys.executable, "-c", code], env={**env, "SUBBENCH_REPRODUCIBLE": "0"},
                         capture_output=True, text=True, check=True)
    assert json.loads(off.stdout)[1]["aten_cpu_capability"] is None


def test_entries_record_the_settings(tmp_path):
    assert set(settings()) >= {"cpu_model", "reproducible", "threads", "aten_cpu_capability", "mkl_cbwr"}


@pytest.mark.skipif("avx2" not in cpu_flags(), reason="the published hashes are for x86-64 CPUs with AVX2")
def test_reference_build_matches_the_published_hash(tmp_path):
    res = CliRunner().invoke(build_cli(), ["doctor", "--workdir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "matches the published hash bit for bit" in res.output
    assert "aten_cpu_capability  avx2" in res.output


def test_a_base_that_differs_is_reported(tmp_path):
    from subbench.default_plugins.lm_families import TINY_LLAMA

    art = tmp_path / "artifacts" / "base" / "0123456789abcdef"
    art.mkdir(parents=True)
    inputs = {"family": "tiny-llama", "version": TINY_LLAMA.version, "seed": 0, "params": TINY_LLAMA.resolve_params({})}
    (art / "meta.json").write_text(json.dumps({"inputs": inputs, "result": {"sha256": "0" * 64}}))
    res = CliRunner().invoke(build_cli(), ["doctor", "--skip-build", "--workdir", str(tmp_path)])
    assert res.exit_code == 1
    assert "base tiny-llama@0" in res.output and "DIFFERS from the published " + doctor.QUICKSTART_BASES["tiny-llama@0"][:16] in res.output


def test_nothing_to_check_says_so(tmp_path):
    res = CliRunner().invoke(build_cli(), ["doctor", "--skip-build", "--workdir", str(tmp_path)])
    assert res.exit_code == 0 and "nothing was checked" in res.output
