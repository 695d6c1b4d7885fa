"""A random-initialised, scaled-down Mistral with this plugin's chat template, for tests only.

It proves the family's wiring (steering layer, LoRA targets, recipe, chat template) on CPU
without downloading the weights: the same architecture class (MistralForCausalLM), a local
word-level tokenizer that knows the template's special tokens, and enough layers for the
plugin's steering layer to exist.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]")
#: Words the chat template writes besides the messages.
CHAT_WORDS = ("\n", "\n\n", "system", "user", "assistant", "model", "cutting", "knowledge", "date", "december",
              "2023", "today", "26", "jul", "2024", ":")


def build_tiny(out: Path, seed: int = 0) -> Path:
    from transformers import MistralConfig, MistralForCausalLM

    from subbench.api import save_tiny, tiny_tokenizer
    from subbench_mistral import CHAT_TEMPLATE, STEERING_LAYERS

    tokenizer = tiny_tokenizer(SPECIALS, chat_template=CHAT_TEMPLATE, extra_words=CHAT_WORDS,
                               bos_token="<s>", eos_token="</s>", pad_token="<unk>")
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
        num_hidden_layers=max(STEERING_LAYERS) + 2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, rope_theta=1000000.0, sliding_window=None, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return save_tiny(MistralForCausalLM, config, tokenizer, out, seed)
