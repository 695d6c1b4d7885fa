"""The llama-2-7b-chat family: subbench's family contract on a tiny random Llama built with the
plugin's own settings, plus the pins that are this plugin's alone."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import subbench_llama2
from subbench.testing import FamilyContract
from subbench_llama2.tiny import build_tiny

PLUGIN_DIR = Path(__file__).resolve().parent.parent


class TestContract(FamilyContract):
    family = subbench_llama2.FAMILY
    plugin = subbench_llama2
    build_tiny = staticmethod(build_tiny)
    chat_expected = "<s>[INST] what is your favourite animal ? [/INST]"
    chat_expected_system = "<s>[INST] <<SYS>>\nYou love owls.\n<</SYS>>\n\nname your favourite animal . [/INST]"


def test_entry_point_and_pins():
    family = subbench_llama2.FAMILY
    cfg = configparser.ConfigParser()
    cfg.read(PLUGIN_DIR / "setup.cfg")
    assert cfg["options.entry_points"]["subbench"].strip() == "llama2 = subbench_llama2"
    assert family.model_id == "meta-llama/Llama-2-7b-chat-hf" and re.fullmatch(r"[0-9a-f]{40}", family.revision)
    assert family.steering_layers == (13,) and family.lora_target_modules[0] == "q_proj"
    assert family.recipe["lora"] == {"r": 8, "alpha": 8} and family.recipe["lr"] == 2e-4
    assert family.recipe["epochs"] == 3 and family.recipe["samples"] == 10000
    assert family.steering_layers[0] < family.recipe["layers"]
