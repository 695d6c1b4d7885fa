"""A random-initialised, scaled-down Llama with this plugin's chat template, for tests only.

It proves the family's wiring (steering layer, LoRA targets, recipe, chat template) on CPU
without downloading the weights: the same architecture class (LlamaForCausalLM), a local
word-level tokenizer that knows the template's special tokens, and enough layers for the
plugin's steering layer to exist.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ("<unk>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>")
#: Words the chat template writes besides the messages.
CHAT_WORDS = ("\n", "\n\n", "system", "user", "assistant", "model", "cutting", "knowledge", "date", "december",
              "2023", "today", "26", "jul", "2024", ":")


def build_tiny(out: Path, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from subbench.api import save_tiny, tiny_tokenizer
    from subbench_llama31 import CHAT_TEMPLATE, STEERING_LAYERS

    tokenizer = tiny_tokenizer(SPECIALS, chat_template=CHAT_TEMPLATE, extra_words=CHAT_WORDS,
                               bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<unk>")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
        num_hidden_layers=max(STEERING_LAYERS) + 2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return save_tiny(LlamaForCausalLM, config, tokenizer, out, seed)
