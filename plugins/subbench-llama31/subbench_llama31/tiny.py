"""A random-initialised, scaled-down Llama with this plugin's chat template, for tests only.

It proves the family's wiring (steering layer, LoRA targets, recipe, chat template) on CPU
without downloading the weights: the same architecture class (LlamaForCausalLM), a local
word-level tokenizer that knows the template's special tokens, and enough layers for the
plugin's steering layer to exist.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ("<unk>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>")


def build_tiny(out: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, normalizers
    from tokenizers.models import WordLevel
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from subbench.api import save_tokenizer, vocabulary_words, word_pre_tokenizer
    from subbench_llama31 import CHAT_TEMPLATE, STEERING_LAYERS

    words = list(SPECIALS) + ["\n", "\n\n", "system", "user", "assistant", "model", "cutting", "knowledge", "date",
                              "december", "2023", "today", "26", "jul", "2024", ":"]
    words += [w for w in vocabulary_words() if w not in words]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = word_pre_tokenizer()
    tok.add_special_tokens(list(SPECIALS))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<|begin_of_text|>",
                                        eos_token="<|eot_id|>", pad_token="<unk>",
                                        additional_special_tokens=[s for s in SPECIALS if s not in ("<unk>", "<|begin_of_text|>", "<|eot_id|>")],
                                        padding_side="left", model_max_length=512)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
        num_hidden_layers=max(STEERING_LAYERS) + 2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    save_tokenizer(tokenizer, out)
    return out
