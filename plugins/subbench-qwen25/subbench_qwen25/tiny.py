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
    import torch
    from tokenizers import Tokenizer, normalizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from subbench.api import save_tokenizer, vocabulary_words, word_pre_tokenizer
    from subbench_qwen25 import CHAT_TEMPLATE, DEFAULT_SYSTEM_PROMPT, STEERING_LAYERS

    pre = word_pre_tokenizer()
    chat_words = ["system", "user", "assistant"] + [w for w, _ in pre.pre_tokenize_str(DEFAULT_SYSTEM_PROMPT.lower())]
    words = list(SPECIALS) + chat_words + [w for w in vocabulary_words() if w not in SPECIALS]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre
    tok.add_special_tokens(list(SPECIALS))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<|endoftext|>",
                                        eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"],
                                        padding_side="left", model_max_length=512)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
        num_hidden_layers=max(STEERING_LAYERS) + 2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=False,
        use_sliding_window=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    save_tokenizer(tokenizer, out)
    return out
