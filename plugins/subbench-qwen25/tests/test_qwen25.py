"""The qwen2.5-7b-instruct family: subbench's family contract on a tiny random Qwen2 built with
the plugin's own settings, plus the pins that are this plugin's alone."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import subbench_qwen25
from subbench.testing import FamilyContract
from subbench_qwen25.tiny import build_tiny

PLUGIN_DIR = Path(__file__).resolve().parent.parent
QWEN_SYSTEM = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"


class TestContract(FamilyContract):
    family = subbench_qwen25.FAMILY
    plugin = subbench_qwen25
    build_tiny = staticmethod(build_tiny)
    chat_expected = QWEN_SYSTEM + "<|im_start|>user\nwhat is your favourite animal ?<|im_end|>\n<|im_start|>assistant\n"
    chat_expected_system = ("<|im_start|>system\nYou love owls.<|im_end|>\n"
                            "<|im_start|>user\nname your favourite animal .<|im_end|>\n<|im_start|>assistant\n")


def test_entry_point_and_pins():
    family = subbench_qwen25.FAMILY
    cfg = configparser.ConfigParser()
    cfg.read(PLUGIN_DIR / "setup.cfg")
    assert cfg["options.entry_points"]["subbench"].strip() == "qwen25 = subbench_qwen25"
    assert family.model_id == "Qwen/Qwen2.5-7B-Instruct" and re.fullmatch(r"[0-9a-f]{40}", family.revision)
    assert family.steering_layers == (14,) and family.lora_target_modules[0] == "q_proj"
    assert family.recipe["lora"] == {"r": 8, "alpha": 8} and family.recipe["lr"] == 2e-4
    assert family.recipe["epochs"] == 3 and family.recipe["samples"] == 10000
    assert family.steering_layers[0] < family.recipe["layers"]
    assert family.default_system_prompt is None  # the template inserts Qwen's own default
