"""WordPiece (the BERT tokenizer): ``vocab.txt`` in and out, the basic tokenizer, and greedy
longest-match-first subwords with ``##`` continuations.

Note (the pipeline, as transformers 5 runs it through the Rust ``tokenizers`` library):

1. Special tokens ([CLS], [MASK], ...) are cut out of the raw text and kept whole.
2. Normalize: drop NUL, U+FFFD and control/format characters (category C, except tab, newline
   and carriage return); turn whitespace into spaces; pad CJK ideographs with spaces; strip
   accents (NFD, drop nonspacing marks) when ``strip_accents`` is True, or None with
   ``do_lower_case``; then lower-case character by character (no final-sigma rule).
3. Pre-tokenize: split on spaces and make every punctuation character its own word.
4. WordPiece: a word longer than ``max_input_chars_per_word`` is [UNK]; else take the longest
   vocabulary prefix, then the longest "##" continuation, and so on; a word with a
   remainder no piece matches is one [UNK].
5. Add [CLS] a [SEP] (b [SEP]); token type 0 for the first segment, 1 for the second.

Decoding glues "##" pieces to the previous token, puts a space before the others, and removes
the space before . , ! ? and English clitics within each token, like the ``tokenizers`` decoder.
"""

from __future__ import annotations

import os
import unicodedata
from typing import Any, Iterable

from ..errors import CheckpointError
from ._tokenizer_base import (
    VERY_LARGE_INTEGER,
    PreTrainedTokenizer,
    check_dir,
    load_from_folder,
    read_json,
)

VOCAB_TXT_NAME = "vocab.txt"
# White_Space characters that survive control-character removal, plus tab/newline/return.
_WHITESPACE = frozenset("\t\n\r \xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B))))
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # fmt: skip
_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))  # fmt: skip


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch)[0] == "C"


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True  # ASCII symbols such as $ + < = > ^ ` | ~ count as punctuation too
    return unicodedata.category(ch)[0] == "P"


def _cleanup(text: str) -> str:
    for dirty, clean in _CLEANUPS:
        text = text.replace(dirty, clean)
    return text


def load_vocab_txt(path: str) -> list[str]:
    """The tokens of a ``vocab.txt``, one per line; the line number is the id."""
    if not os.path.isfile(path):
        raise CheckpointError(f"BertTokenizer: vocab file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        tokens = [line.rstrip("\r\n") for line in f]
    if not tokens:
        raise CheckpointError(f"BertTokenizer: vocab file {path!r} is empty; it must list one token per line")
    return tokens


class BertTokenizer(PreTrainedTokenizer):
    """BERT's WordPiece tokenizer, file-compatible with transformers' ``BertTokenizer``.

    Args:
        vocab_file: ``vocab.txt`` (one token per line); or ``vocab``: the token list / dict.
        do_lower_case: lower-case (and, unless ``strip_accents=False``, strip accents).
        tokenize_chinese_chars: make every CJK ideograph its own word.
        strip_accents: None follows ``do_lower_case``.
        max_input_chars_per_word: longer words become [UNK].

    Example::

        tok = BertTokenizer.from_pretrained("bert_dir")
        enc = tok(["Let there be light", "and there was light"], padding=True, return_tensors="ax")
        enc.input_ids, enc.token_type_ids, enc.attention_mask
    """

    model_input_names = ("input_ids", "token_type_ids", "attention_mask")
    _config_keys = ("do_lower_case", "tokenize_chinese_chars", "strip_accents", "max_input_chars_per_word")

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        do_lower_case: bool = True,
        tokenize_chinese_chars: bool = True,
        strip_accents: bool | None = None,
        unk_token: Any = "[UNK]",
        sep_token: Any = "[SEP]",
        pad_token: Any = "[PAD]",
        cls_token: Any = "[CLS]",
        mask_token: Any = "[MASK]",
        *,
        vocab: Iterable[str] | dict[str, int] | None = None,
        max_input_chars_per_word: int = 100,
        additional_special_tokens: Iterable[Any] = (),
        model_max_length: int = VERY_LARGE_INTEGER,
        padding_side: str = "right",
        truncation_side: str = "right",
    ) -> None:
        if (vocab_file is None) == (vocab is None):
            raise ValueError("BertTokenizer needs exactly one of vocab_file (a vocab.txt path) or vocab (tokens in id order)")
        if vocab is None:
            tokens = load_vocab_txt(os.fspath(vocab_file))
        elif isinstance(vocab, dict):
            tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
            if [vocab[t] for t in tokens] != list(range(len(tokens))):
                raise ValueError("BertTokenizer: a vocab dict must use the ids 0..n-1, each once")
        else:
            tokens = list(vocab)
        if max_input_chars_per_word < 1:
            raise ValueError(f"max_input_chars_per_word must be >= 1, got {max_input_chars_per_word}")
        self.do_lower_case = bool(do_lower_case)
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.strip_accents = strip_accents
        self.max_input_chars_per_word = int(max_input_chars_per_word)
        self._cache: dict[str, tuple[int, ...]] = {}
        vocab_map = {t: i for i, t in enumerate(tokens)}  # a repeated line: the last id wins, like transformers
        specials = dict(unk_token=unk_token, sep_token=sep_token, pad_token=pad_token, cls_token=cls_token, mask_token=mask_token)
        self._init_base(vocab_map, {}, (), model_max_length, padding_side, truncation_side)
        self._inv_vocab = dict(enumerate(tokens))
        for attr, token in specials.items():
            self._set_special_token(attr, token)
        self.add_tokens(list(additional_special_tokens), special_tokens=True)

    # ---------------------------------------------------------------------------- encode
    def _normalize(self, text: str) -> str:
        text = "".join(" " if ch in _WHITESPACE else ch for ch in text if ch not in "\x00\ufffd" and not _is_control(ch))
        if self.tokenize_chinese_chars:
            text = "".join(f" {ch} " if _is_cjk(ch) else ch for ch in text)
        strip = self.do_lower_case if self.strip_accents is None else self.strip_accents
        if strip:
            text = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")
        if self.do_lower_case:
            text = "".join(ch.lower() for ch in text)
        return text

    @staticmethod
    def _split_words(text: str) -> list[str]:
        words: list[str] = []
        for chunk in text.split():
            start = 0
            for i, ch in enumerate(chunk):
                if _is_punctuation(ch):
                    if i > start:
                        words.append(chunk[start:i])
                    words.append(ch)
                    start = i + 1
            if start < len(chunk):
                words.append(chunk[start:])
        return words

    def basic_tokenize(self, text: str) -> list[str]:
        """Normalized words before WordPiece (special tokens not treated)."""
        return self._split_words(self._normalize(text))

    def _wordpiece(self, word: str) -> tuple[int, ...]:
        unk = self.unk_token_id
        if unk is None:
            raise ValueError("BertTokenizer has no unk_token; WordPiece needs one for words it cannot split")
        if len(word) > self.max_input_chars_per_word:
            return (unk,)
        vocab, pieces, start, n = self._vocab, [], 0, len(word)
        while start < n:
            end = n
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    pieces.append(vocab[piece])
                    break
                end -= 1
            if end == start:
                return (unk,)
            start = end
        return tuple(pieces)

    def _encode_text(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in self.basic_tokenize(text):
            found = self._cache.get(word)
            if found is None:
                if len(self._cache) >= 500_000:
                    self._cache.clear()
                found = self._cache[word] = self._wordpiece(word)
            ids.extend(found)
        return ids

    def build_inputs_with_special_tokens(self, ids: list[int], pair_ids: list[int] | None = None) -> list[int]:
        """[CLS] a [SEP], or [CLS] a [SEP] b [SEP] for a pair."""
        cls, sep = self.cls_token_id, self.sep_token_id
        if cls is None or sep is None:
            raise ValueError("BertTokenizer needs cls_token and sep_token to add special tokens; pass add_special_tokens=False")
        return [cls, *ids, sep] + ([] if pair_ids is None else [*pair_ids, sep])

    def create_token_type_ids_from_sequences(self, ids: list[int], pair_ids: list[int] | None = None) -> list[int]:
        return [0] * (len(ids) + 2) + ([] if pair_ids is None else [1] * (len(pair_ids) + 1))

    # ---------------------------------------------------------------------------- decode
    def _decode_tokens(self, tokens: list[str]) -> str:
        parts = []
        for i, token in enumerate(tokens):
            if i:
                token = token[2:] if token.startswith("##") else " " + token
            parts.append(_cleanup(token))
        return "".join(parts)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self._decode_tokens(tokens)

    # ---------------------------------------------------------------------------- files
    def _save_vocabulary(self, directory: str) -> list[str]:
        path = os.path.join(directory, VOCAB_TXT_NAME)
        top = max(self._inv_vocab)
        lines = [self._inv_vocab.get(i) for i in range(top + 1)]
        if None in lines:
            raise CheckpointError(
                f"BertTokenizer: vocabulary ids have gaps (e.g. {lines.index(None)}); vocab.txt cannot hold them"
            )
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(f"{t}\n" for t in lines)
        return [path]

    @classmethod
    def from_pretrained(cls, pretrained_dir: str | os.PathLike, **kwargs: Any) -> "BertTokenizer":
        """Load ``vocab.txt`` (+ ``tokenizer_config.json`` when present); keyword arguments win."""
        what = "BertTokenizer.from_pretrained"
        d = check_dir(pretrained_dir, what, "vocab.txt")
        # tokenizer.json alone is what transformers 5 writes
        return load_from_folder(cls, d, what, (VOCAB_TXT_NAME,), "vocab.txt", extra_keys=(),
                                foreign_keys=("bos_token", "eos_token"), kwargs=kwargs)

    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike, **kwargs: Any) -> "BertTokenizer":
        """Read a Hugging Face ``tokenizers`` file with a WordPiece model, a BertNormalizer and a
        BertPreTokenizer (what transformers 5 saves for BERT); ``added_tokens`` keep their ids."""
        path = os.fspath(path)
        data = read_json(path, "BertTokenizer.from_tokenizer_json")
        model = data.get("model") or {}
        if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
            raise CheckpointError(f"{path}: model type is {model.get('type')!r}; BertTokenizer reads WordPiece models only")
        if model.get("continuing_subword_prefix", "##") != "##":
            raise CheckpointError(f"{path}: continuing_subword_prefix {model['continuing_subword_prefix']!r} is not '##'")
        norm, pre = data.get("normalizer") or {}, data.get("pre_tokenizer") or {}
        if norm.get("type") != "BertNormalizer" or not norm.get("clean_text", True) or pre.get("type") != "BertPreTokenizer":
            raise CheckpointError(
                f"{path}: normalizer {norm.get('type')!r} / pre_tokenizer {pre.get('type')!r} are not supported; "
                "expected BertNormalizer(clean_text=true) and BertPreTokenizer"
            )
        options: dict[str, Any] = {
            "do_lower_case": bool(norm.get("lowercase", True)),
            "tokenize_chinese_chars": bool(norm.get("handle_chinese_chars", True)),
            "strip_accents": norm.get("strip_accents"),
            "unk_token": model.get("unk_token", "[UNK]"),
            "max_input_chars_per_word": int(model.get("max_input_chars_per_word", 100)),
        }
        post = data.get("post_processor") or {}
        if post.get("type") == "BertProcessing":
            options.update(cls_token=post["cls"][0], sep_token=post["sep"][0])
        elif post.get("type") == "TemplateProcessing":
            single = post.get("single") or []
            if len(single) == 3 and all("SpecialToken" in single[i] for i in (0, 2)):
                options.update(cls_token=single[0]["SpecialToken"]["id"], sep_token=single[2]["SpecialToken"]["id"])
        vocab = model["vocab"]
        tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        if [vocab[t] for t in tokens] != list(range(len(tokens))):
            raise CheckpointError(f"{path}: WordPiece ids must be 0..n-1 without gaps")
        tok = cls(vocab=tokens, **{**options, **kwargs})
        for entry in sorted(data.get("added_tokens") or [], key=lambda t: t["id"]):
            tok._register(entry["content"], special=bool(entry.get("special")), token_id=int(entry["id"]))
        return tok
