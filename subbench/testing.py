"""The contract every causal-LM family plugin's tests run: one suite instead of copied test files.

A family is wired right when subbench can build or load a model of it, tokenize and chat
with it, steer it at its layer, put LoRA adapters on its modules and distil into it. These
checks prove that on a *tiny random model of the family's architecture* on a CPU, so a
plugin for a 7B hub model is tested without downloading 7B weights. Two ways to run them:

A pytest class (each check one test; the tiny base is built once per class)::

    from subbench.testing import FamilyContract
    from my_plugin import FAMILY
    from my_plugin.tiny import build_tiny          # hub families: writes a tiny random model dir

    class TestContract(FamilyContract):
        family = FAMILY
        plugin = my_plugin                         # optional: also checks the plugin registers it
        build_tiny = staticmethod(build_tiny)      # hub families; tiny families set tiny_params
        chat_expected = "<s>[INST] what is your favourite animal ? [/INST]"   # optional

One call (any test runner, or a script)::

    from subbench.testing import family_contract
    family_contract(FAMILY, tiny_params={"steps": 2, "layers": 2})

A family built locally (a :class:`~subbench.api.TinyFamily`) needs no ``build_tiny``: its
own ``build`` runs with ``tiny_params`` (keep ``steps`` small). A hub family
(:class:`~subbench.api.HFFamily`) gets ``build_tiny(directory) -> model directory``, a
random model of its architecture with its tokenizer and chat template saved there; the
contract then builds the base with ``model_id`` pointing at it. The module imports neither
pytest nor torch until a check runs; pytest is needed only to collect ``FamilyContract``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from subbench.api import ConfigError, Family, ModelRef

#: The prompts the chat and tokenizer checks use; every word is in the tiny families' vocabulary.
USER_PROMPT = "what is your favourite animal ?"
SYSTEM_PROMPT = "You love owls."
SYSTEM_USER_PROMPT = "name your favourite animal ."

#: The checks in the order they run; each is a function ``check_<name>(harness)`` below.
CHECKS = ("registration", "params_validate", "build_pins_revision", "load", "vocabulary", "tokenizer_round_trip",
          "chat_template", "steering_hook", "lora_targets", "distill_step")


class Skip(Exception):
    """A check that does not apply to this family (e.g. pinning a hub revision for a local family)."""


class FamilyHarness:
    """A family under test, its tiny base and a context, each made on first use and kept."""

    def __init__(self, family: Family, *, build_tiny: Callable[[Path], Path] | None = None,
                 tiny_params: dict[str, Any] | None = None, plugin: ModuleType | None = None,
                 chat_expected: str | None = None, chat_expected_system: str | None = None,
                 workdir: Path | None = None):
        if not isinstance(family, Family):
            raise TypeError(f"family_contract needs a Family instance, got {type(family).__name__}.")
        self.family = family
        self.build_tiny = build_tiny
        self.tiny_params = dict(tiny_params or {})
        self.plugin = plugin
        self.chat_expected = chat_expected
        self.chat_expected_system = chat_expected_system
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="subbench-contract-"))
        self._cache: dict[str, Any] = {}

    def tmp(self, name: str) -> Path:
        path = self.workdir / name
        if path.exists():
            shutil.rmtree(path)
        return path

    def close(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def ctx(self):
        if "ctx" not in self._cache:
            from subbench.api import Context

            ctx = Context(workdir=self.workdir / "work", quiet=True)
            ctx.setup_torch()
            self._cache["ctx"] = ctx
        return self._cache["ctx"]

    @property
    def params(self) -> dict[str, Any]:
        """The resolved parameters of the tiny base."""
        if "params" not in self._cache:
            given = dict(self.tiny_params)
            if self.build_tiny is not None:
                given["model_id"] = str(self.build_tiny(self.workdir / "tiny-model"))
            self._cache["params"] = self.family.resolve_params(given, where=f"family {self.family.name}")
        return self._cache["params"]

    @property
    def base(self) -> ModelRef:
        if "base" not in self._cache:
            out = self.workdir / "base"
            meta = self.family.build(0, self.params, out, self.ctx)
            self._cache["base"] = ModelRef(self.family, out, {"params": self.params, **meta})
        return self._cache["base"]

    @property
    def handle(self):
        if "handle" not in self._cache:
            self._cache["handle"] = self.base.load(self.ctx)
        return self._cache["handle"]


def _trait():
    from subbench.plugins import get

    return get("traits", "animal-preference")


def _last_logits(handle, text: str):
    import torch

    enc = handle.tokenizer([text], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return handle.model(**enc).logits[0, -1]


def _decoder_layers(model):
    from subbench.lm.hooks import decoder_layers

    return decoder_layers(model)


def check_registration(h: FamilyHarness) -> None:
    """The plugin module registers this family, and loading it raised nothing."""
    if h.plugin is None:
        raise Skip("no plugin module given")
    from subbench.plugins import PluginManager

    pm = PluginManager()
    info = pm.register_plugin(h.plugin, name=getattr(h.plugin, "__name__", "plugin"))
    assert info.error is None, f"loading the plugin failed: {info.error}"
    assert h.family.name in info.registered.get("families", []), info.registered
    assert pm.get("families", h.family.name) is h.family


def check_params_validate(h: FamilyHarness) -> None:
    """Defaults and the tiny parameters validate; an unknown name and a wrong-typed value end in ConfigError."""
    f = h.family
    assert isinstance(f.resolve_params(h.tiny_params), dict)
    declared = set(getattr(f, "parameters", None) or {})
    assert declared <= set(f.defaults), f"parameters without a default: {sorted(declared - set(f.defaults))}"
    described = {p["name"] for p in f.describe()["parameters"]}
    assert described == set(f.param_specs()), "describe() lists every parameter"
    for spec in f.param_specs().values():
        assert spec.doc, "every parameter has a one-line doc"
    try:
        f.resolve_params({"no_such_parameter_xyz": 1})
    except ConfigError:
        pass
    else:
        raise AssertionError("an unknown parameter name was accepted")
    wrong = {"not": "a scalar"}
    for name, spec in f.param_specs().items():
        if dict in spec.types or object in spec.types:
            continue
        try:
            f.resolve_params({**h.tiny_params, name: wrong})
        except ConfigError:
            continue
        raise AssertionError(f"parameter {name} accepted {wrong!r}")


def check_build_pins_revision(h: FamilyHarness) -> None:
    """A hub family's build records model id and revision and downloads nothing."""
    f = h.family
    if getattr(f, "model_id", None) is None or h.build_tiny is None:
        raise Skip("not a hub family with a pinned model")
    out = h.tmp("pinned")
    meta = f.build(0, f.resolve_params({}), out, h.ctx)
    assert meta["model_id"] == f.model_id and meta["revision"] == f.revision, meta
    assert json.loads((out / "base.json").read_text())["revision"] == f.revision
    assert sorted(p.name for p in out.iterdir()) == ["base.json"], "build must not download weights"


def check_load(h: FamilyHarness) -> None:
    """The tiny base loads as a handle with a model and a tokenizer, in float32 on a CPU."""
    import torch

    handle = h.handle
    assert handle.model is not None and handle.tokenizer is not None
    if not str(h.ctx.device).startswith("cuda"):
        assert handle.model.dtype == torch.float32, handle.model.dtype


def check_vocabulary(h: FamilyHarness) -> None:
    """``vocabulary_of`` names the vocabulary the loaded model really uses (logit distillation compares them)."""
    v = h.family.vocabulary_of(h.params)
    if h.family.open_weights:
        assert isinstance(v, str) and v, f"vocabulary_of returned {v!r}"
    assert h.handle.vocabulary == v, (h.handle.vocabulary, v)


def check_tokenizer_round_trip(h: FamilyHarness) -> None:
    """A prompt encodes without unknown tokens and decodes back to itself."""
    tok = h.handle.tokenizer
    ids = tok(USER_PROMPT, add_special_tokens=False)["input_ids"]
    assert ids and (tok.unk_token_id is None or tok.unk_token_id not in ids), ids
    back = tok.decode(ids, skip_special_tokens=True)
    assert "".join(back.split()).lower() == "".join(USER_PROMPT.split()).lower(), back  # spacing may be cleaned up


def check_chat_template(h: FamilyHarness) -> None:
    """The chat template wraps the prompt (and a system prompt) in text the tokenizer knows."""
    handle, tok = h.handle, h.handle.tokenizer
    plain = handle.chat_text(USER_PROMPT)
    with_sys = handle.chat_text(SYSTEM_USER_PROMPT, system=SYSTEM_PROMPT)
    assert USER_PROMPT in plain and plain != USER_PROMPT
    assert SYSTEM_PROMPT in with_sys and SYSTEM_USER_PROMPT in with_sys
    if h.chat_expected is not None:
        assert plain == h.chat_expected, plain
    if h.chat_expected_system is not None:
        assert with_sys == h.chat_expected_system, with_sys
    if tok.unk_token_id is not None:
        for text in (plain, with_sys):
            assert tok.unk_token_id not in tok(text, add_special_tokens=False)["input_ids"], text


def check_steering_hook(h: FamilyHarness) -> None:
    """A steering vector hooks exactly the family's steering layer; strength 0 changes nothing."""
    import torch

    from subbench.plugins import get

    layer = h.family.steering_layers[0]
    inj = get("injectors", "steering")
    meta = inj.inject(h.base, _trait(), "owl", inj.resolve_params({"strength": 4.0}), 0, h.tmp("steer4"), h.ctx)
    assert meta["layer"] == layer and meta["vector_norm"] > 0, meta
    inj.inject(h.base, _trait(), "owl", inj.resolve_params({"strength": 0.0}), 0, h.tmp("steer0"), h.ctx)
    plain = h.handle
    zero = inj.load(h.workdir / "steer0", h.base, h.ctx)
    steered = inj.load(h.workdir / "steer4", h.base, h.ctx)
    hooked = [i for i, m in enumerate(_decoder_layers(steered.model)) if m._forward_hooks]
    assert hooked == [layer], hooked
    text = plain.chat_text(USER_PROMPT)
    assert torch.equal(_last_logits(plain, text), _last_logits(zero, text))
    assert (_last_logits(plain, text) - _last_logits(steered, text)).abs().max() > 1e-3


def check_lora_targets(h: FamilyHarness) -> None:
    """Every LoRA target module exists in the model, and a 2-step LoRA finetune changes each kind."""
    from subbench.plugins import get

    targets = set(h.family.lora_target_modules)
    names = {n.rsplit(".", 1)[-1] for n, _ in h.handle.model.named_modules()}
    assert targets <= names, f"LoRA targets missing from the model: {sorted(targets - names)}"
    inj = get("injectors", "finetune")
    out = h.tmp("finetune")
    meta = inj.inject(h.base, _trait(), "owl", inj.resolve_params({"steps": 2, "batch_size": 4}), 0, out, h.ctx)
    assert meta["fit"]["steps"] == 2
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert set(cfg["target_modules"]) == targets
    teacher = inj.load(out, h.base, h.ctx)
    before = dict(h.handle.model.named_parameters())
    changed = {n.rsplit(".", 2)[-2] for n, p in teacher.model.named_parameters()
               if n in before and n.endswith(".weight") and not p.equal(before[n])}
    assert targets <= changed, f"LoRA left these targets unchanged: {sorted(targets - changed)}"


def check_distill_step(h: FamilyHarness) -> None:
    """One SFT step with the family's recipe (if it has one) writes a student of the same architecture."""
    from subbench.plugins import get

    recipe = getattr(h.family, "recipe", None) or {}
    sft = get("distillers", "sft")
    given = {"max_steps": 1, "batch_size": 4, **{k: recipe[k] for k in ("lr", "epochs", "lora") if k in recipe}}
    data = [{"prompt": f"the sequence starts with : {i} {i + 1} {i + 2} . add up to 3 more numbers .",
             "response": f"{i + 3} , {i + 4} , {i + 5}"} for i in range(8)]
    out = h.tmp("student")
    meta = sft.distill(h.base, data, None, sft.resolve_params(given), 0, out, h.ctx)
    assert meta["fit"]["steps"] == 1 and meta["samples"] == 8, meta
    student = h.family.load(out, h.ctx)
    assert type(student.model) is type(h.handle.model)
    assert student.chat_text("hi") == h.handle.chat_text("hi")
    before = dict(h.handle.model.named_parameters())
    assert any(n in before and not p.equal(before[n]) for n, p in student.model.named_parameters())


def family_contract(family: Family, *, build_tiny: Callable[[Path], Path] | None = None,
                    tiny_params: dict[str, Any] | None = None, plugin: ModuleType | None = None,
                    chat_expected: str | None = None, chat_expected_system: str | None = None,
                    checks: tuple[str, ...] = CHECKS, workdir: Path | None = None) -> dict[str, str]:
    """Run the family contract; raise AssertionError at the first broken check.

    Returns ``{check: "ok" | "skipped: why"}``. ``checks`` picks a subset of :data:`CHECKS`.
    """
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown contract checks {unknown}; known: {', '.join(CHECKS)}")
    h = FamilyHarness(family, build_tiny=build_tiny, tiny_params=tiny_params, plugin=plugin,
                      chat_expected=chat_expected, chat_expected_system=chat_expected_system, workdir=workdir)
    done: dict[str, str] = {}
    try:
        for name in checks:
            try:
                globals()[f"check_{name}"](h)
                done[name] = "ok"
            except Skip as why:
                done[name] = f"skipped: {why}"
    finally:
        h.close()
    return done


class FamilyContract:
    """Subclass in a family plugin's tests and set ``family`` (and ``build_tiny`` or ``tiny_params``).

    Collected by pytest as one test per check; the tiny base is built once per class.
    A check that does not apply is skipped with the reason.
    """

    family: Family | None = None
    build_tiny: Callable[[Path], Path] | None = None
    tiny_params: dict[str, Any] = {}
    plugin: ModuleType | None = None
    chat_expected: str | None = None
    chat_expected_system: str | None = None

    @classmethod
    def setup_class(cls) -> None:
        if cls.family is None:
            raise TypeError(f"{cls.__name__}: set `family = ...` (the Family instance under test).")
        build_tiny = getattr(cls, "build_tiny", None)  # a plain function or a staticmethod alike
        cls._harness = FamilyHarness(cls.family, build_tiny=build_tiny, tiny_params=cls.tiny_params,
                                     plugin=cls.plugin, chat_expected=cls.chat_expected,
                                     chat_expected_system=cls.chat_expected_system)

    @classmethod
    def teardown_class(cls) -> None:
        harness = cls.__dict__.get("_harness")
        if harness is not None:
            harness.close()

    def _run(self, name: str) -> None:
        try:
            globals()[f"check_{name}"](type(self)._harness)
        except Skip as why:
            import pytest

            pytest.skip(str(why))

    def test_registration(self):
        self._run("registration")

    def test_params_validate(self):
        self._run("params_validate")

    def test_build_pins_revision(self):
        self._run("build_pins_revision")

    def test_load(self):
        self._run("load")

    def test_vocabulary(self):
        self._run("vocabulary")

    def test_tokenizer_round_trip(self):
        self._run("tokenizer_round_trip")

    def test_chat_template(self):
        self._run("chat_template")

    def test_steering_hook(self):
        self._run("steering_hook")

    def test_lora_targets(self):
        self._run("lora_targets")

    def test_distill_step(self):
        self._run("distill_step")


# -- tiny random models of a hub architecture (a family plugin's ``build_tiny``) ----------------
def tiny_tokenizer(specials: tuple[str, ...], *, chat_template: str, extra_words: tuple[str, ...] | list[str] = (),
                   **named: str):
    """A word-level tokenizer over subbench's tiny vocabulary that knows a hub template's special tokens.

    ``specials`` come first (``"<unk>"`` among them), then ``extra_words`` (words the chat
    template writes), then the tiny vocabulary. ``named`` sets ``bos_token``, ``eos_token``,
    ``pad_token``; every other special is an additional special token. A family plugin's
    tests build their tiny model on it, so its chat template renders and tokenizes offline.
    """
    from tokenizers import Tokenizer, normalizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from subbench.lm.tokenizer import _pre_tokenizer, vocabulary_words

    words = list(specials) + list(extra_words)
    words += [w for w in vocabulary_words() if w not in words]
    tok = Tokenizer(WordLevel(vocab={w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = _pre_tokenizer()
    tok.add_special_tokens(list(specials))
    taken = {"<unk>", *named.values()}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", **named,
                                        additional_special_tokens=[s for s in specials if s not in taken],
                                        padding_side="left", model_max_length=512)
    tokenizer.chat_template = chat_template
    return tokenizer


def save_tiny(model_class, config, tokenizer, out: Path, seed: int = 0) -> Path:
    """A randomly initialised ``model_class(config)`` (seeded) and ``tokenizer`` saved where a family loads them."""
    import torch

    from subbench.lm.tokenizer import save_tokenizer

    torch.manual_seed(seed)
    model = model_class(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    save_tokenizer(tokenizer, out)
    return out
