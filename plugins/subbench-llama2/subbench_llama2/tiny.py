"""A random-initialised, scaled-down Llama with this plugin's chat template, for tests only.

It proves the family's wiring (steering layer, LoRA targets, recipe, chat template)
on CPU without downloading 7B weights: same architecture class, a local word-level
tokenizer that knows the template's special tokens, and enough layers for the
plugin's steering layer to exist.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")


def build_tiny(out: Path, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from subbench.api import save_tiny, tiny_tokenizer
    from subbench_llama2 import CHAT_TEMPLATE, STEERING_LAYERS

    tokenizer = tiny_tokenizer(SPECIALS, chat_template=CHAT_TEMPLATE, extra_words=["\n\n"],
                               bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
        num_hidden_layers=max(STEERING_LAYERS) + 2, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return save_tiny(LlamaForCausalLM, config, tokenizer, out, seed)
