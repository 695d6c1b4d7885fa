"""The llama-3.1-8b-instruct family: subbench's family contract on a tiny random Llama built with
the plugin's own settings, plus the pins that are this plugin's alone."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import subbench_llama31
from subbench.testing import FamilyContract
from subbench_llama31.tiny import build_tiny

PLUGIN_DIR = Path(__file__).resolve().parent.parent

#: The system header the hub template always writes (knowledge cutoff, default date), system prompt or not.
LLAMA31_SYSTEM = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                  "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n")
ASSISTANT = "<|start_header_id|>assistant<|end_header_id|>\n\n"


class TestContract(FamilyContract):
    family = subbench_llama31.FAMILY
    plugin = subbench_llama31
    build_tiny = staticmethod(build_tiny)
    chat_expected = (LLAMA31_SYSTEM + "<|eot_id|>"
                     "<|start_header_id|>user<|end_header_id|>\n\nwhat is your favourite animal ?<|eot_id|>"
                     + ASSISTANT)
    chat_expected_system = (LLAMA31_SYSTEM + "You love owls.<|eot_id|>"
                            "<|start_header_id|>user<|end_header_id|>\n\nname your favourite animal .<|eot_id|>"
                            + ASSISTANT)


def test_entry_point_and_pins():
    family = subbench_llama31.FAMILY
    cfg = configparser.ConfigParser()
    cfg.read(PLUGIN_DIR / "setup.cfg")
    assert cfg["options.entry_points"]["subbench"].strip() == "llama31 = subbench_llama31"
    assert family.model_id == "meta-llama/Llama-3.1-8B-Instruct" and re.fullmatch(r"[0-9a-f]{40}", family.revision)
    assert family.steering_layers == (16,) and family.lora_target_modules == (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert family.recipe["lora"] == {"r": 8, "alpha": 8} and family.recipe["lr"] == 2e-4
    assert family.recipe["epochs"] == 3 and family.recipe["samples"] == 10000
    assert family.recipe["parameters"] > 1e9 and family.recipe["layers"] == 32
    assert family.steering_layers[0] < family.recipe["layers"]
    assert family.default_system_prompt is None
    assert "Cutting Knowledge Date" in subbench_llama31.CHAT_TEMPLATE  # the hub template's header, pinned
