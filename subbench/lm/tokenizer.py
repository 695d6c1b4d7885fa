"""The word-level tokenizer shared by the tiny families (vocabulary ``subbench-words-v1``).

Word level keeps every number 0-999 and every animal a single token, so a trait's answer
and each number of a sequence is one next-token distribution. Saved with
``tokenizer_class: PreTrainedTokenizerFast`` so that ``AutoTokenizer`` does not swap in a
Qwen2 tokenizer for the qwen2-config family.
"""

from __future__ import annotations

import json
from pathlib import Path

from subbench.lm.corpus import ANIMALS, template_texts

VOCABULARY = "subbench-words-v1"
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


def vocabulary_words() -> list[str]:
    """The vocabulary in id order: specials, numbers, animals, then template words."""
    pre = _pre_tokenizer()
    words: list[str] = list(SPECIALS) + [str(i) for i in range(1000)] + ["\n"]
    for a in ANIMALS:
        words += [a, a + "s"]
    for text in template_texts():
        words += [w for w, _ in pre.pre_tokenize_str(text.lower())]
    seen: dict[str, None] = {}
    for w in words:
        seen.setdefault(w, None)
    return list(seen)


def build_tokenizer():
    """A fresh ``PreTrainedTokenizerFast`` with the chat template and special tokens set."""
    from tokenizers import Tokenizer, normalizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary_words())}
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
