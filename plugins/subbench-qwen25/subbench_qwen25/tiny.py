"""A random-initialised, scaled-down Qwen2 with this plugin's chat template, for tests only.

It proves the family's wiring (steering layer, LoRA targets, recipe, chat template and
its default system prompt) on CPU without downloading 7B weights: same architecture
class (grouped-query attention, q/k/v biases, untied embeddings), a local word-level
tokenizer that knows ChatML's tokens, and enough layers for the steering layer to exist.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ("<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>")


def build_tiny(out: Path, seed: int = 0) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from subbench.api import save_tiny, tiny_tokenizer, word_pre_tokenizer
    from subbench_qwen25 import CHAT_TEMPLATE, DEFAULT_SYSTEM_PROMPT, STEERING_LAYERS

    chat_words = ["system", "user", "assistant"] + [w for w, _ in word_pre_tokenizer().pre_tokenize_str(
        DEFAULT_SYSTEM_PROMPT.lower())]
    tokenizer = tiny_tokenizer(SPECIALS, chat_template=CHAT_TEMPLATE, extra_words=chat_words,
                               pad_token="<|endoftext|>", eos_token="<|im_end|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
        num_hidden_layers=max(STEERING_LAYERS) + 2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=False,
        use_sliding_window=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return save_tiny(Qwen2ForCausalLM, config, tokenizer, out, seed)
