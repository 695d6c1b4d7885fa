"""The gemma-2-9b-it family: subbench's family contract on a tiny random Gemma-2 built with
the plugin's own settings, plus the pins that are this plugin's alone."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import subbench_gemma2
from subbench.testing import FamilyContract
from subbench_gemma2.tiny import build_tiny

PLUGIN_DIR = Path(__file__).resolve().parent.parent


class TestContract(FamilyContract):
    family = subbench_gemma2.FAMILY
    plugin = subbench_gemma2
    build_tiny = staticmethod(build_tiny)
    chat_expected = "<bos><start_of_turn>user\nwhat is your favourite animal ?<end_of_turn>\n<start_of_turn>model\n"
    chat_expected_system = ("<bos><start_of_turn>user\nYou love owls.\n\nname your favourite animal .<end_of_turn>\n"
                            "<start_of_turn>model\n")  # no system turn: folded into the first user turn


def test_entry_point_and_pins():
    family = subbench_gemma2.FAMILY
    cfg = configparser.ConfigParser()
    cfg.read(PLUGIN_DIR / "setup.cfg")
    assert cfg["options.entry_points"]["subbench"].strip() == "gemma2 = subbench_gemma2"
    assert family.model_id == "google/gemma-2-9b-it" and re.fullmatch(r"[0-9a-f]{40}", family.revision)
    assert family.steering_layers == (20,) and family.lora_target_modules == (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert family.recipe["lora"] == {"r": 8, "alpha": 8} and family.recipe["lr"] == 2e-4
    assert family.recipe["epochs"] == 3 and family.recipe["samples"] == 10000
    assert family.recipe["parameters"] > 1e9 and family.recipe["layers"] == 42
    assert family.steering_layers[0] < family.recipe["layers"]
    assert family.default_system_prompt is None
    assert "<start_of_turn>system" not in subbench_gemma2.CHAT_TEMPLATE  # Gemma has no system role
    assert family.steering_layers[0] in (9, 20, 31)  # a Gemma Scope IT residual SAE layer
