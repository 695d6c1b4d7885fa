"""subbench.testing's family contract: it passes a sound family and catches a miswired one."""

from __future__ import annotations

import pytest

from subbench.api import TINY_LLAMA, Param, TinyFamily, defaults_of
from subbench.testing import CHECKS, family_contract

SMALL = {**TINY_LLAMA.defaults, "hidden_size": 16, "intermediate_size": 32, "heads": 2, "layers": 2}
FAST = {"steps": 2, "batch_size": 4}


def tiny(name: str) -> TinyFamily:
    return TinyFamily(name, "llama", "a family under contract test", SMALL)


def test_a_sound_tiny_family_passes_every_check(tmp_path):
    done = family_contract(tiny("contract-ok"), tiny_params=FAST, workdir=tmp_path)
    assert list(done) == list(CHECKS)
    assert done["registration"].startswith("skipped") and done["build_pins_revision"].startswith("skipped")
    assert all(v == "ok" for k, v in done.items() if k not in ("registration", "build_pins_revision")), done


def test_a_lora_target_the_model_lacks_fails(tmp_path):
    family = tiny("contract-bad-lora")
    family.lora_target_modules = ("q_proj", "qkv_proj")  # a Llama has no fused qkv_proj
    with pytest.raises(AssertionError, match="qkv_proj"):
        family_contract(family, tiny_params=FAST, checks=("lora_targets",), workdir=tmp_path)


def test_a_parameter_without_doc_or_check_fails():
    family = tiny("contract-bad-param")
    family.parameters = {**family.parameters, "extra": Param(int, 1)}
    with pytest.raises(AssertionError, match="without a default: .'extra'"):
        family_contract(family, checks=("params_validate",))
    family.defaults = defaults_of(family.parameters)
    with pytest.raises(AssertionError, match="doc"):
        family_contract(family, checks=("params_validate",))
    family.parameters = {**family.parameters, "extra": Param(object, 1, "accepts anything")}
    family.defaults = defaults_of(family.parameters)
    family_contract(family, checks=("params_validate",))  # an `any` parameter has no wrong type to try


def test_unknown_check_names_are_refused():
    with pytest.raises(ValueError, match="known: registration"):
        family_contract(tiny("contract-x"), checks=("registation",))


def test_api_is_light_until_a_heavy_name_is_used():
    import subprocess
    import sys

    code = ("import sys, subbench.api as api; heavy = ('torch', 'transformers', 'subbench.default_plugins.lm_families');"
            "print([m for m in heavy if m in sys.modules]); api.HFFamily; print('subbench.default_plugins.lm_families' "
            "in sys.modules); print(sorted(set(api.__all__) - set(dir(api))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:3] == ["[]", "True", "[]"], out
    import subbench.api as api

    for name in api.__all__:
        assert getattr(api, name) is not None, name
    with pytest.raises(AttributeError, match="public names"):
        api.SteeringInjector  # noqa: B018


def test_first_party_plugins_import_only_the_public_api():
    import re
    from pathlib import Path

    plugins = Path(__file__).resolve().parent.parent / "plugins"
    sources = sorted(plugins.glob("*/subbench_*/**/*.py")) + sorted(plugins.glob("*/tests/*.py"))
    assert len(sources) >= 6
    for path in sources:
        for mod in re.findall(r"^\s*(?:from|import)\s+(subbench(?:\.\w+)*)\b", path.read_text(), re.M):
            allowed = ("subbench.api", "subbench.testing") if path.parent.name == "tests" else ("subbench.api",)
            assert mod in allowed, f"{path}: imports {mod}; plugins import subbench.api only"
