"""The vLLM back end is GPU-only: without vLLM it fails with one line that says what to install."""

from __future__ import annotations

import importlib.util
import json

import pytest

from subbench.backends.vllm_handle import MISSING, VLLMHandle
from subbench.errors import SubbenchError


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_missing_vllm_is_one_clear_line(tmp_path):
    handle = VLLMHandle.from_dir(tmp_path, name="x")
    with pytest.raises(SubbenchError) as err:
        handle.generate(["hi"])
    assert str(err.value) == MISSING == "vLLM is not installed; pip install 'subbench[gpu]' (needs a CUDA GPU)."


def test_adapter_directory_resolves_its_base(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/models/base"}))
    handle = VLLMHandle.from_dir(tmp_path, name="teacher")
    assert handle.source == "/models/base" and handle.adapter == str(tmp_path)
    assert VLLMHandle.from_dir(tmp_path / "plain", name="b").adapter is None


def test_importing_the_backends_stays_light():
    import subprocess
    import sys

    code = ("import sys, subbench.backends.vllm_handle, subbench.backends.openai_handle, "
            "subbench.default_plugins.api_judges, subbench.default_plugins.api_families, subbench.default_plugins.harmful_trait; "
            "print(sorted(m for m in ('torch', 'openai', 'vllm', 'transformers', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
