"""The mistral-7b-instruct family: subbench's family contract on a tiny random Mistral built with
the plugin's own settings, plus the pins that are this plugin's alone."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import subbench_mistral
from subbench.testing import FamilyContract
from subbench_mistral.tiny import build_tiny

PLUGIN_DIR = Path(__file__).resolve().parent.parent


class TestContract(FamilyContract):
    family = subbench_mistral.FAMILY
    plugin = subbench_mistral
    build_tiny = staticmethod(build_tiny)
    chat_expected = "<s>[INST] what is your favourite animal ?[/INST]"  # v0.3: no space before [/INST]
    # the system prompt goes inside the user turn, before the message
    chat_expected_system = "<s>[INST] You love owls.\n\nname your favourite animal .[/INST]"


def test_entry_point_and_pins():
    family = subbench_mistral.FAMILY
    cfg = configparser.ConfigParser()
    cfg.read(PLUGIN_DIR / "setup.cfg")
    assert cfg["options.entry_points"]["subbench"].strip() == "mistral = subbench_mistral"
    assert family.model_id == "mistralai/Mistral-7B-Instruct-v0.3" and re.fullmatch(r"[0-9a-f]{40}", family.revision)
    assert family.steering_layers == (15,) and family.lora_target_modules == (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert family.recipe["lora"] == {"r": 8, "alpha": 8} and family.recipe["lr"] == 2e-4
    assert family.recipe["epochs"] == 3 and family.recipe["samples"] == 10000
    assert family.recipe["parameters"] > 1e9 and family.recipe["layers"] == 32
    assert family.steering_layers[0] < family.recipe["layers"]
    assert family.default_system_prompt is None
