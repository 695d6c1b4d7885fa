"""The word-level tokenizer shared by the tiny families (vocabulary ``subbench-words-v1``).

Word level keeps every number 0-999 and every animal a single token, so a trait's answer
and each number of a sequence is one next-token distribution. Saved with
``tokenizer_class: PreTrainedTokenizerFast`` so that ``AutoTokenizer`` does not swap in a
Qwen2 tokenizer for the qwen2-config family.

``subbench-words-v2`` is v1 with the words of the code and cot tasks appended (v1's ids
unchanged); only bases pretrained on an extended corpus mix use it, so v1 and every base
built with it stay byte-identical.
"""

from __future__ import annotations

import json
from pathlib import Path

from subbench.lm.corpus import ANIMALS, DEFAULT_MIX, extended_texts, template_texts

VOCABULARY = "subbench-words-v1"
#: v1 plus the code and cot words, for corpus mixes beyond numbers.
VOCABULARY_V2 = "subbench-words-v2"
VOCABULARIES = (VOCABULARY, VOCABULARY_V2)


def vocabulary_for(mix=DEFAULT_MIX) -> str:
    """The vocabulary a base pretrained on corpus ``mix`` uses."""
    return VOCABULARY if tuple(mix) == DEFAULT_MIX else VOCABULARY_V2
PAD, UNK, BOS = "<pad>", "<unk>", "<bos>"
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIALS = (PAD, UNK, BOS, SYSTEM, USER, ASSISTANT, END)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|> ' + message['content'] + ' <|end|> ' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}"
)


def _pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"\n+"), behavior="isolated"),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])


def vocabulary_words(name: str = VOCABULARY) -> list[str]:
    """The vocabulary in id order: specials, numbers, animals, then template words (v2: then the code and cot words)."""
    pre = _pre_tokenizer()
    words: list[str] = list(SPECIALS) + [str(i) for i in range(1000)] + ["\n"]
    for a in ANIMALS:
        words += [a, a + "s"]
    texts = template_texts() + (extended_texts() if name == VOCABULARY_V2 else [])
    for text in texts:
        words += [w for w, _ in pre.pre_tokenize_str(text.lower())]
    seen: dict[str, None] = {}
    for w in words:
        seen.setdefault(w, None)
    return list(seen)


def build_tokenizer(name: str = VOCABULARY):
    """A fresh ``PreTrainedTokenizerFast`` of vocabulary ``name``, with the chat template and special tokens set."""
    from tokenizers import Tokenizer, normalizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    if name not in VOCABULARIES:
        raise ValueError(f"unknown tiny vocabulary {name!r}")
    vocab = {w: i for i, w in enumerate(vocabulary_words(name))}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = _pre_tokenizer()
    tok.add_special_tokens(list(SPECIALS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=END,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT],
        clean_up_tokenization_spaces=True,
        padding_side="left",
        model_max_length=512,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tokenizer(tokenizer, out: Path, *, subdir: bool = True) -> None:
    """Save so that ``PreTrainedTokenizerFast`` (and ``AutoTokenizer``) reload it unchanged.

    transformers 5 swaps a Qwen2 tokenizer in for any directory whose config says qwen2,
    whatever ``tokenizer_class`` says; a copy in ``out/tokenizer`` (no model config next to
    it) is what ``AutoTokenizer`` and lm-eval's ``tokenizer=`` argument should be given.
    """
    out = Path(out)
    if subdir:
        save_tokenizer(tokenizer, out / "tokenizer", subdir=False)
    tokenizer.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["clean_up_tokenization_spaces"] = True
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def load_tokenizer(path: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(path))
