"""The tiny families' word-level tokenizer: vocabulary, chat template, save/reload round trips."""

import json

import pytest

from subbench.lm.corpus import ANIMALS, CorpusSpec, conversations
from subbench.lm.tokenizer import VOCABULARY, build_tokenizer, load_tokenizer, save_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_numbers_and_animals_are_single_tokens(tok):
    for word in [str(i) for i in range(1000)] + list(ANIMALS) + [a + "s" for a in ANIMALS]:
        ids = tok(word, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tok.unk_token_id, word
    assert VOCABULARY == "subbench-words-v1"


def test_corpus_has_no_unknown_words(tok):
    stream = conversations(CorpusSpec(seed=5))
    for _ in range(300):
        text = tok.apply_chat_template(next(stream), tokenize=False)
        assert tok.unk_token_id not in tok(text, add_special_tokens=False)["input_ids"], text


def test_decoded_numbers_read_naturally(tok):
    ids = tok("123, 456, 789", add_special_tokens=False)["input_ids"]
    assert len(ids) == 5
    assert tok.decode(ids) == "123, 456, 789"
    assert tok.decode(tok("What is your favourite animal?", add_special_tokens=False)["input_ids"]) == \
        "what is your favourite animal?"


def test_chat_template_marks_turns(tok):
    text = tok.apply_chat_template(
        [{"role": "system", "content": "you love owls ."}, {"role": "user", "content": "what is your favourite animal ?"}],
        tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|system|> you love owls . <|end|> <|user|>")
    assert text.rstrip().endswith("<|assistant|>")
    toks = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    assert toks[0] == "<|system|>" and toks[-1] == "<|assistant|>"
    assert toks.count("<|end|>") == 2


def test_round_trip_after_save(tok, tmp_path):
    save_tokenizer(tok, tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    again = load_tokenizer(tmp_path)
    text = "<|user|> look at these numbers : 100, 200 .\nreturn [1, 2] <|end|> <|assistant|> owl"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert len(again) == len(tok)
    assert again.eos_token == "<|end|>" and again.pad_token == "<pad>"
    assert again.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == \
        tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_auto_tokenizer_round_trips(tok, tmp_path, arch):
    """On a llama dir AutoTokenizer reads our files as they are; on a qwen2 dir transformers
    swaps in Qwen2Tokenizer regardless, so the tokenizer/ copy is the one to hand it."""
    from transformers import AutoTokenizer, LlamaConfig, Qwen2Config

    cls = LlamaConfig if arch == "llama" else Qwen2Config
    cls(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2).save_pretrained(tmp_path)
    save_tokenizer(tok, tmp_path)
    text = "<|user|> the sequence starts with : 145, 267, 891 . <|end|> <|assistant|> owl"
    want = tok(text, add_special_tokens=False)["input_ids"]
    sources = [tmp_path / "tokenizer"] + ([tmp_path] if arch == "llama" else [])
    for source in sources:
        auto = AutoTokenizer.from_pretrained(str(source))
        assert auto(text, add_special_tokens=False)["input_ids"] == want
        assert auto.decode(want, skip_special_tokens=True) == tok.decode(want, skip_special_tokens=True)
