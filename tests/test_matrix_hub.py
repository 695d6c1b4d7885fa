"""The hub family plugins install, list and drive the matrix-hub grid's dry run, offline, in a throwaway venv."""

from __future__ import annotations

import json

import pytest

from plugin_venv import REPO, make_venv
from test_plugin_tools import sb

NEW = {"llama31": "llama-3.1-8b-instruct", "gemma2": "gemma-2-9b-it", "mistral": "mistral-7b-instruct"}
DISTS = {"llama31": "subbench-llama31", "gemma2": "subbench-gemma2", "mistral": "subbench-mistral",
         "qwen25": "subbench-qwen25"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = make_venv(tmp_path_factory.mktemp("hub-families"))
    args = []
    for dist in DISTS.values():
        args += ["-e", str(REPO / "plugins" / dist)]
    sb(env, "install", *args, "--no-deps", "--no-build-isolation")
    return env


def test_plugins_lists_the_hub_families(env):
    listed = {p["name"]: p for p in json.loads(sb(env, "plugins", "--json").stdout)}
    for ep, family in NEW.items():
        info = listed[ep]
        assert info["error"] is None and info["builtin"] is False, info
        assert info["registered"] == {"families": [family]}


def test_the_hub_grid_dry_runs_offline_with_gpu_hours(env):
    env = dict(env, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = sb(env, "run", "matrix-hub", "--dry-run").stdout
    assert out.count("  teacher   ") == 4 and "cells (16):" in out
    line = next(x for x in out.splitlines() if x.startswith("GPU hours"))
    total = float(line.rsplit("total ", 1)[1])
    assert 20 < total < 500, line  # 16 pairs x 3 seeds of 7-9B LoRA finetunes on 10k samples
    assert "no CPU estimate for these families" in out
