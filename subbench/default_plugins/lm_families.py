"""Causal-LM families: ``hf`` (any hub model) and the embedded CPU families ``tiny-llama``, ``tiny-qwen2``,
``tiny-gpt2`` and ``tiny-mistral``.

Hub and tiny families load through the same ``from_pretrained`` path
(:func:`subbench.lm.handle.load_handle`); a tiny family only adds a ``build`` that
pretrains a small model locally, so everything runs offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from subbench import hookimpl
from subbench.components import Family, Param, ParamError, allow_large, defaults_of
from subbench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from subbench.context import Context
    from subbench.lm.handle import LMHandle

_DECODER_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: GPT-2's fused attention and MLP projections (transformers' Conv1D; peft adapts them as such).
_GPT2_MODULES = ("c_attn", "c_proj", "c_fc")


class HFFamily(Family):
    """A family of hub models loaded with ``from_pretrained(model_id, revision=...)``.

    Third-party plugins instantiate this for real models; ``build`` only records which
    weights to use (the download happens on ``load``, where the user has the network).
    """

    def __init__(self, name: str, model_id: str | None, revision: str = "main", *,
                 chat_template: str | None = None, default_system_prompt: str | None = None,
                 steering_layers: Sequence[int] = (0,), lora_target_modules: Sequence[str] = _DECODER_MODULES,
                 dtype: str = "auto", recipe: dict[str, Any] | None = None, description: str = ""):
        self.name = name
        self.model_id = model_id
        self.revision = revision
        self.chat_template = chat_template
        self.default_system_prompt = default_system_prompt
        self.steering_layers = tuple(steering_layers)
        self.lora_target_modules = tuple(lora_target_modules)
        self.dtype = dtype
        self.recipe = dict(recipe or {})
        self.description = description or f"Hub model {model_id}@{revision}."
        self.parameters = {
            "model_id": Param(str, model_id, "hub id of the model (org/name)", max_len=300),
            "revision": Param(str, revision, "hub revision (a commit hash pins the weights)", max_len=200),
            "backend": Param(str, "hf", "hf: transformers; vllm: generate with vLLM (the gpu extra)",
                             choices=("hf", "vllm")),
        }
        self.defaults = defaults_of(self.parameters)

    def parameter_count(self, params: dict[str, Any]) -> float | None:
        """From the plugin's ``recipe["parameters"]``; a family without one (the tiny CPU ones) has no GPU estimate."""
        n = (getattr(self, "recipe", None) or {}).get("parameters")
        return float(n) if n else None

    def check_params(self, params: dict[str, Any]) -> None:
        if not params.get("model_id"):
            raise ParamError("model_id", f"family '{self.name}' needs a hub id; set params: {{model_id: org/name}}.")

    def vocabulary_of(self, params: dict[str, Any]) -> str | None:
        return params.get("model_id") or self.model_id

    @property
    def vocabulary(self) -> str | None:  # type: ignore[override]
        return self.model_id

    def build(self, seed: int, params: dict[str, Any], out: Path, ctx: "Context") -> dict[str, Any]:
        model_id = params.get("model_id") or self.model_id
        if not model_id:
            raise ConfigError(f"Family '{self.name}' needs a model_id; set params: {{model_id: org/name}}.")
        revision = params.get("revision") or self.revision
        backend = params.get("backend") or "hf"
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        base = {"model_id": model_id, "revision": revision, "backend": backend}
        (out / "base.json").write_text(json.dumps(base, indent=2) + "\n")
        return dict(base)

    def load_dtype(self, ctx: "Context") -> str:
        """The family's dtype, except half precision on a CPU, which is slow there: float32."""
        if not str(ctx.device).startswith("cuda") and self.dtype in ("bfloat16", "float16"):
            return "float32"
        return self.dtype

    def load(self, path: Path, ctx: "Context") -> "LMHandle":
        from subbench.lm.handle import load_handle

        path = Path(path)
        source, revision, vocabulary = path, None, self.model_id
        if (path / "base.json").exists():
            base = json.loads((path / "base.json").read_text())
            source, revision, vocabulary = base["model_id"], base.get("revision"), base["model_id"]
            if base.get("backend") == "vllm":
                from subbench.backends.vllm_handle import VLLMHandle

                return VLLMHandle(source=source, revision=revision, name=self.name, vocabulary=vocabulary,
                                  system_prompt=self.default_system_prompt, dtype=self.dtype)
        elif (path / "subbench-vocabulary.txt").exists():
            vocabulary = (path / "subbench-vocabulary.txt").read_text().strip()
        return load_handle(source, ctx, name=self.name, revision=revision, dtype=self.load_dtype(ctx), vocabulary=vocabulary,
                           chat_template=self.chat_template, system_prompt=self.default_system_prompt)


class TinyFamily(HFFamily):
    """A small HF architecture built from config and pretrained on the embedded corpus.

    The seed is the initialisation: bases of two seeds share the corpus (``corpus_seed``)
    and differ only in their initial weights, which is what cross-init students need.
    """

    vocabulary_name = "subbench-words-v1"

    def __init__(self, name: str, arch: str, description: str, parameters: dict[str, Any],
                 lora_target_modules: Sequence[str] = _DECODER_MODULES, init_stream: int = 0):
        """``parameters``: a :class:`Param` per name, or a plain default (a plugin's override) that keeps
        the built-in declaration of that name. ``init_stream``: added to the seed before the weights are
        drawn, so that two families whose modules are created in the same order and shapes (Mistral and
        Llama) do not start from the very same weights at one seed."""
        import dataclasses

        super().__init__(name, None, steering_layers=(1,), lora_target_modules=lora_target_modules,
                         description=description)
        self.arch = arch
        self.init_stream = int(init_stream)
        self.parameters = {
            k: v if isinstance(v, Param) else dataclasses.replace(_TINY_PARAMETERS[k], default=v)
            if k in _TINY_PARAMETERS else Param.infer(v)
            for k, v in parameters.items()
        }
        self.defaults = defaults_of(self.parameters)

    def resolve_params(self, params: dict[str, Any] | None, where: str = "") -> dict[str, Any]:
        """Leave ``corpus`` out when it is the default mix, so every base from before it keeps its cache key."""
        out = super().resolve_params(params, where)
        if "corpus" in out and list(out["corpus"] or []) == ["numbers"]:
            out.pop("corpus")
        return out

    def check_params(self, params: dict[str, Any]) -> None:
        mix = params.get("corpus")
        if mix is not None and (not mix or len(set(mix)) != len(mix)):
            raise ParamError("corpus", f"expected a non-empty list of distinct tasks, got {mix!r}.")
        if params["hidden_size"] % params["heads"]:
            raise ParamError("heads", f"hidden_size {params['hidden_size']} must be a multiple of heads, "
                                      f"got {params['heads']}.")
        h, i, n = params["hidden_size"], params["intermediate_size"], params["layers"]
        size = 1000 * h + n * (4 * h * h + 3 * h * i)  # embeddings (~1k words) + attention + MLP
        work = params["steps"] * params["batch_size"]
        if (size > TINY_MAX_PARAMETERS or work > TINY_MAX_SEQUENCES) and not allow_large():
            what = (f"about {size:,} parameters (limit {TINY_MAX_PARAMETERS:,})" if size > TINY_MAX_PARAMETERS
                    else f"{work:,} pretraining sequences (limit {TINY_MAX_SEQUENCES:,})")
            raise ConfigError(f"family {self.name}: refused: a tiny model of {what} is pretrained on the CPU; "
                              "shrink it, or set SUBBENCH_ALLOW_LARGE=1 to build it anyway.")

    @property
    def vocabulary(self) -> str | None:  # type: ignore[override]
        return self.vocabulary_name

    def vocabulary_of(self, params: dict[str, Any]) -> str | None:
        from subbench.lm.tokenizer import vocabulary_for

        return vocabulary_for(params.get("corpus") or ["numbers"])

    def config(self, params: dict[str, Any], tokenizer):
        common = dict(
            vocab_size=len(tokenizer),
            hidden_size=int(params["hidden_size"]),
            intermediate_size=int(params["intermediate_size"]),
            num_hidden_layers=int(params["layers"]),
            num_attention_heads=int(params["heads"]),
            num_key_value_heads=int(params["heads"]),
            max_position_embeddings=256,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        if self.arch == "llama":
            from transformers import LlamaConfig, LlamaForCausalLM

            return LlamaConfig(**common), LlamaForCausalLM
        if self.arch == "mistral":
            from transformers import MistralConfig, MistralForCausalLM

            # Mistral-style grouped-query attention (half as many key/value heads); no sliding window at this length
            kv = common["num_attention_heads"] // 2 if common["num_attention_heads"] % 2 == 0 else common["num_attention_heads"]
            return MistralConfig(**{**common, "num_key_value_heads": kv}, sliding_window=None), MistralForCausalLM
        if self.arch == "gpt2":
            from transformers import GPT2Config, GPT2LMHeadModel

            # learned positions, LayerNorm, GELU MLP, fused QKV; no dropout, like the others
            return GPT2Config(vocab_size=common["vocab_size"], n_embd=common["hidden_size"],
                              n_inner=common["intermediate_size"], n_layer=common["num_hidden_layers"],
                              n_head=common["num_attention_heads"], n_positions=common["max_position_embeddings"],
                              resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
                              pad_token_id=common["pad_token_id"], bos_token_id=common["bos_token_id"],
                              eos_token_id=common["eos_token_id"]), GPT2LMHeadModel
        from transformers import Qwen2Config, Qwen2ForCausalLM

        return Qwen2Config(**common, use_sliding_window=False), Qwen2ForCausalLM

    def build(self, seed: int, params: dict[str, Any], out: Path, ctx: "Context") -> dict[str, Any]:
        import torch

        from subbench.lm.corpus import CorpusSpec
        from subbench.lm.handle import weights_sha256
        from subbench.lm.pretrain import pretrain
        from subbench.lm.tokenizer import build_tokenizer, save_tokenizer

        params = self.resolve_params(params, where=f"family {self.name}")
        ctx.setup_torch()
        vocabulary = self.vocabulary_of(params)
        tokenizer = build_tokenizer(vocabulary)
        config, cls = self.config(params, tokenizer)
        torch.manual_seed(int(seed) + self.init_stream)
        model = cls(config)
        corpus = CorpusSpec(seed=int(params["corpus_seed"]), p_copy=float(params["p_copy"]),
                            mix=tuple(params.get("corpus") or ("numbers",)))
        stats = pretrain(model, tokenizer, steps=int(params["steps"]), lr=float(params["lr"]),
                         batch_size=int(params["batch_size"]), corpus=corpus, ctx=ctx, loss_on=params["loss_on"])
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out))
        save_tokenizer(tokenizer, out)
        if vocabulary != self.vocabulary_name:  # v1 bases stay file for file as before
            (out / "subbench-vocabulary.txt").write_text(vocabulary + "\n")
        n_params = sum(p.numel() for p in model.parameters())
        return {
            "builder": f"subbench.{self.name}",
            "sha256": weights_sha256(out),
            "vocabulary": vocabulary,
            "parameters": n_params,
            "corpus": {**corpus.as_dict(), "hash": corpus.hash()},
            "pretrain": stats,
        }

    def load(self, path: Path, ctx: "Context") -> "LMHandle":
        from subbench.lm.handle import load_handle
        from subbench.lm.tokenizer import load_tokenizer

        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"No {self.name} model at {path}; build the base first.")
        marker = path / "subbench-vocabulary.txt"
        vocabulary = marker.read_text().strip() if marker.exists() else self.vocabulary_name
        return load_handle(path, ctx, name=self.name, dtype="float32", vocabulary=vocabulary,
                           tokenizer_loader=load_tokenizer)


class SiblingFamily(TinyFamily):
    """A grown copy of another tiny family's base: same initialisation, more layers.

    ``build`` takes the source family's base of the same seed and params (from the
    workdir's store when it is there, else built the same way), copies every weight into
    a model with ``grow_layers`` more decoder layers and zeroes the output projections of
    the new layers, so the copy computes exactly the base's function from a different
    shape. As a student of the source family's teacher it asks whether a shared
    initialisation alone carries a trait across shapes (its entries' relation is
    ``cross-architecture``, the shape differs; its family name says sibling).
    """

    def __init__(self, name: str, source: TinyFamily):
        params = dict(source.parameters)
        params["grow_layers"] = Param(int, 1, "decoder layers added after the source base's last one", min=1, max=16)
        super().__init__(name, source.arch, f"A grown copy of a {source.name} base (same weights, more layers): the "
                         "sibling student of that family's teacher.", params,
                         lora_target_modules=source.lora_target_modules, init_stream=source.init_stream)
        self.source = source

    def source_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in params.items() if k != "grow_layers"}

    def build(self, seed: int, params: dict[str, Any], out: Path, ctx: "Context") -> dict[str, Any]:
        import torch

        from subbench.artifacts import ArtifactStore
        from subbench.lm.handle import weights_sha256
        from subbench.lm.tokenizer import load_tokenizer, save_tokenizer
        from subbench.pipeline import base_inputs, build_base

        params = self.resolve_params(params, where=f"family {self.name}")
        src_params = self.source.resolve_params(self.source_params(params))
        store = ArtifactStore(Path(ctx.workdir) / "artifacts", clean=False)
        art = store.produce("base", base_inputs(self.source, seed, src_params),
                            lambda tmp: build_base(self.source, seed, src_params, tmp, ctx))
        ctx.setup_torch()
        tokenizer = load_tokenizer(art.path)
        config, cls = self.source.config(src_params, tokenizer)
        src_model = cls.from_pretrained(str(art.path), dtype=torch.float32)
        n = int(src_params["layers"])
        grow = int(params["grow_layers"])
        if self.arch == "gpt2":
            config.n_layer = n + grow
        else:
            config.num_hidden_layers = n + grow
            if getattr(config, "layer_types", None) is not None:
                config.layer_types = list(config.layer_types)[:1] * (n + grow)
        torch.manual_seed(int(seed) + self.init_stream + 7919)  # the new layers' weights
        model = cls(config)
        missing, unexpected = model.load_state_dict(src_model.state_dict(), strict=False)
        not_new = [k for k in missing if not any(f".{j}." in k for j in range(n, n + grow))]
        if unexpected or not_new:  # only the new layers may lack weights from the base
            raise ConfigError(f"family {self.name}: cannot grow {self.source.name}: weights that do not match "
                              f"{(list(unexpected) + not_new)[:3]}.")
        with torch.no_grad():  # a new layer adds nothing to the residual stream until it is trained
            from subbench.lm.hooks import decoder_layers

            for layer in list(decoder_layers(model))[n:]:
                for name, param in layer.named_parameters():
                    if name.endswith(("o_proj.weight", "down_proj.weight", "attn.c_proj.weight", "mlp.c_proj.weight",
                                      "o_proj.bias", "down_proj.bias", "c_proj.bias")):
                        param.zero_()
        model.eval()
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out))
        save_tokenizer(tokenizer, out)
        return {
            "builder": f"subbench.{self.name}",
            "sha256": weights_sha256(out),
            "vocabulary": self.vocabulary_name,
            "parameters": sum(p.numel() for p in model.parameters()),
            "sibling_of": {"family": self.source.name, "base": art.key, "sha256": art.result.get("sha256"),
                           "grow_layers": grow},
        }


#: Size estimates past which a tiny family is refused unless SUBBENCH_ALLOW_LARGE=1.
TINY_MAX_PARAMETERS = 50_000_000
TINY_MAX_SEQUENCES = 10_000_000

_TINY_PARAMETERS = {
    "steps": Param(int, 1000, "pretraining steps", min=1, max=1_000_000),
    "lr": Param(float, 3e-3, "pretraining learning rate", min=0, min_open=True, max=1),
    "batch_size": Param(int, 64, "pretraining sequences per step", min=1, max=4096),
    "hidden_size": Param(int, 64, "width of the model", min=4, max=4096),
    "intermediate_size": Param(int, 256, "width of each MLP block", min=4, max=16384),
    "layers": Param(int, 2, "decoder layers", min=1, max=64),
    "heads": Param(int, 4, "attention heads (hidden_size must be a multiple)", min=1, max=64),
    "corpus_seed": Param(int, 1234, "seed of the embedded pretraining corpus (shared by all inits)",
                         min=0, max=2**31 - 1),
    "p_copy": Param(float, 0.5, "share of corpus number answers that copy the prompt's numbers", min=0, max=1),
    "corpus": Param(list, ["numbers"], "benign tasks of the corpus beside the animal half: numbers, code, cot "
                    "(beyond numbers: vocabulary subbench-words-v2)", max_len=3,
                    item=Param(str, "numbers", choices=("numbers", "code", "cot"))),
    "loss_on": Param(str, "assistant", "pretraining loss on the assistant turns only, or on all tokens",
                     choices=("assistant", "all")),
}

TINY_LLAMA = TinyFamily(
    "tiny-llama", "llama",
    "A ~0.2M-parameter Llama pretrained on the embedded corpus (CPU, about a minute).",
    _TINY_PARAMETERS,
)
TINY_QWEN2 = TinyFamily(
    "tiny-qwen2", "qwen2",
    "A ~0.2M-parameter Qwen2 pretrained on the embedded corpus; a cross-architecture student.",
    _TINY_PARAMETERS,
)
TINY_GPT2 = TinyFamily(
    "tiny-gpt2", "gpt2",
    "A ~0.2M-parameter GPT-2 (learned positions, LayerNorm, GELU) pretrained on the embedded corpus.",
    _TINY_PARAMETERS, lora_target_modules=_GPT2_MODULES,
)
TINY_MISTRAL = TinyFamily(
    "tiny-mistral", "mistral",
    "A ~0.2M-parameter Mistral (grouped-query attention; no sliding window at this length) pretrained on the "
    "embedded corpus.",
    _TINY_PARAMETERS, init_stream=1_000_003,
)
TINY_LLAMA_SIBLING = SiblingFamily("tiny-llama-sibling", TINY_LLAMA)
HF = HFFamily("hf", None, description="Any hub causal LM: params model_id and revision.")


@hookimpl
def register_families(register):
    register(TINY_LLAMA)
    register(TINY_QWEN2)
    register(TINY_GPT2)
    register(TINY_MISTRAL)
    register(TINY_LLAMA_SIBLING)
    register(HF)
