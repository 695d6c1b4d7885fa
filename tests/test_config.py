"""Experiment validation: every error names the file, the field and what is allowed (exit 2)."""

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from toy_plugin import EXPERIMENT, toy_plugin  # noqa: E402,F401

from subbench.cli import build_cli  # noqa: E402
from subbench.config import load_experiment  # noqa: E402
from subbench.errors import ConfigError  # noqa: E402


def write(tmp_path, text, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def good():
    return EXPERIMENT.format(name="cfg", strengths=json.dumps([0.0, 1.0]))


@pytest.mark.parametrize(
    "old,new,message",
    [
        ("toy-shift", "toy-shfit", "injector.name: Unknown injector 'toy-shfit'. Did you mean: toy-shift?"),
        ("{strength:", "{strenght:", "injector.params: unknown parameter 'strenght' for injector 'toy-shift'. Did you mean: strength?"),
        ("seed: teacher+1", "seed: teacher-1", "students[1].seed: expected an integer in [0, 2147483647] or 'teacher' / 'teacher+N', got 'teacher-1'."),
        ("size: 30", "size: -3", "domain.size: expected an integer in [1, 10000000], got -3."),
        ("seeds: [0, 1]", "seeds: [0, 0]", "seeds: contains duplicates."),
        ("distillers: toy-copy", "distillers: []", "distillers: expected at least one {name, params}."),
        ("trait: {name: toy-love, target: owl}", "trait: {name: toy-love, target: owl, judge: x}", "trait.judge: unknown field."),
        ("name: cfg", "name: cfg\nteachr: 1", "experiment.teachr: unknown field. Did you mean: teacher?"),
    ],
)
def test_validation_errors_name_file_and_field(tmp_path, toy_plugin, old, new, message):
    text = good().replace(old, new)
    assert text != good(), old
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_experiment(str(path))
    assert str(exc.value).startswith(str(path)) or str(path.name) in str(exc.value)
    assert message in str(exc.value)


def test_missing_required_field(tmp_path, toy_plugin):
    text = "\n".join(line for line in good().splitlines() if not line.startswith("injector"))
    with pytest.raises(ConfigError, match=r"experiment\.injector: is required"):
        load_experiment(str(write(tmp_path, text)))


def test_modality_mismatch(tmp_path, toy_plugin, pm):
    if "mlp-digits" not in pm.registry("families"):
        pytest.skip("mlp plugin not loaded")
    text = good().replace("- {family: toy-b, seed: teacher}", "- {family: mlp-digits, seed: teacher}")
    with pytest.raises(ConfigError, match=r"students\[2\]: 'mlp-digits' works on mlp models, but teacher family 'toy-a' is toy"):
        load_experiment(str(write(tmp_path, text)))


def test_invalid_yaml(tmp_path, toy_plugin):
    with pytest.raises(ConfigError, match=r"exp.yaml: line 3 is not valid YAML"):
        load_experiment(str(write(tmp_path, "name: x\nteacher: {family: [\n")))


def test_include_and_grid(tmp_path, toy_plugin):
    write(tmp_path, good().replace("\ndistillers:", "\ndistillation:"), "base.yaml")
    child = write(tmp_path, "include: base.yaml\nname: child\ninjector: {params: {strength: [0.0, 0.5, 1.0]}}\n", "child.yaml")
    exp = load_experiment(str(child), ["domain.size=12"])
    assert exp.name == "child" and exp.size == 12
    assert [g["strength"] for g in exp.grid] == [0.0, 0.5, 1.0]
    assert len(exp.cells()) == 3 * 1 * 3
    # the resolved config (and its hash) changes with any override
    assert exp.config_hash != load_experiment(str(child)).config_hash
    with pytest.raises(ConfigError, match="include: file nope.yaml does not exist"):
        load_experiment(str(write(tmp_path, "include: nope.yaml\n", "bad.yaml")))


def test_cli_exit_code_2_and_one_line(tmp_path, toy_plugin):
    path = write(tmp_path, good().replace("toy-shift", "toy-shfit"))
    from subbench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["run", str(path), "--workdir", str(tmp_path / "w")])
    assert exc.value.code == 2
    assert not (tmp_path / "w").exists()  # nothing half-written


def test_dry_run_lists_cells(tmp_path, toy_plugin):
    res = CliRunner().invoke(build_cli(), ["run", str(write(tmp_path, good())), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "cells (6):" in res.output and "toy-a@teacher+1" in res.output


def test_text_only_teacher_refuses_weight_injectors_and_logit(tmp_path):
    base = """name: endpoint
teacher: {family: openai, params: {base_url: "http://127.0.0.1:9/v1", model: m}}
trait: {name: animal-preference, target: owl}
injector: INJECTOR
domain: {name: numbers, size: 10}
students: [{family: tiny-llama, seed: 0}]
distillation: DISTILL
"""
    cases = [
        ("steering", "sft", "injector.name: 'steering' needs the teacher's weights, but family 'openai' is text-only"),
        ("finetune", "sft", "injector.name: 'finetune' needs the teacher's weights"),
        ("system-prompt", "logit", "family 'openai' is text-only (an API endpoint); use distiller sft"),
    ]
    for injector, distill, message in cases:
        path = write(tmp_path, base.replace("INJECTOR", injector).replace("DISTILL", distill))
        with pytest.raises(ConfigError) as exc:
            load_experiment(str(path))
        assert message in str(exc.value)
    ok = write(tmp_path, base.replace("INJECTOR", "system-prompt").replace("DISTILL", "sft"))
    assert load_experiment(str(ok)).injector.name == "system-prompt"


def test_distillers_is_the_key_and_distillation_still_works(tmp_path, toy_plugin, capsys):
    """`distillers:` (the registry's word) and the older `distillation:` give the same experiment,
    the same config hash (so the same cache keys and entries); the old one says so on stderr."""
    assert "\ndistillers: toy-copy" in good()
    new = write(tmp_path, good(), "new.yaml")
    old = write(tmp_path, good().replace("\ndistillers:", "\ndistillation:"), "old.yaml")
    capsys.readouterr()
    e_new = load_experiment(str(new))
    assert "distill" not in capsys.readouterr().err
    e_old = load_experiment(str(old))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`distillation:` is now called `distillers:`" in err and "old.yaml" in err
    assert e_new.config_hash == e_old.config_hash and e_new.resolved == e_old.resolved
    assert "distillation" in e_new.resolved  # the resolved config (hashed, in entries) keeps its field name
    # --set under either name edits the key the file uses
    for sets in (["distillation=[{name: toy-copy, label: a}]"], ["distillers=[{name: toy-copy, label: a}]"]):
        assert load_experiment(str(new), sets).distillations[0].label == "a"
        assert load_experiment(str(old), sets).distillations[0].label == "a"
    # errors name the key the file uses
    for path, key in ((old, "distillation"), (new, "distillers")):
        typo = write(tmp_path, path.read_text().replace(f"{key}: toy-copy", f"{key}: toy-cpy"), f"typo-{key}.yaml")
        with pytest.raises(ConfigError, match=rf"{key}\[0\]\.name: Unknown distiller 'toy-cpy'"):
            load_experiment(str(typo))
    both = write(tmp_path, good() + "distillation: toy-copy\n", "both.yaml")
    with pytest.raises(ConfigError, match="give distillers or distillation .its older name., not both"):
        load_experiment(str(both))


def test_a_file_renames_the_key_of_the_file_it_includes(tmp_path, toy_plugin):
    write(tmp_path, good().replace("\ndistillers:", "\ndistillation:"), "base.yaml")
    child = write(tmp_path, "include: base.yaml\ndistillers: [{name: toy-copy, label: child}]\n", "child.yaml")
    assert [d.label for d in load_experiment(str(child)).distillations] == ["child"]
