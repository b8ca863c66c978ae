"""Byte-level BPE (the GPT-2 tokenizer): reading ``vocab.json`` + ``merges.txt`` or a
``tokenizer.json``, encoding, decoding, saving, and training a new vocabulary.

Note (how byte-level BPE works, and the choices made here):

- Text is cut into "words" by a regex (GPT-2's by default: contractions, a letter run, a
  number run or a punctuation run each with at most one leading space, then whitespace).
- Each word becomes its UTF-8 bytes, each byte written as one printable character (the
  byte-to-unicode table: printable Latin-1 bytes stand for themselves, the other 68 bytes
  are shifted to U+0100 and up, so a space is "Ġ"). Any text can be encoded: no unknowns.
- Merges are applied lowest rank first, every non-overlapping occurrence left to right, until
  no adjacent pair has a rank. For merge lists a trainer produces this equals the priority
  queue ``tokenizers`` uses. Each word's ids are cached, so a corpus costs one BPE run per
  distinct word.
- Training (``train_bpe``) starts from the 256 byte symbols, counts the distinct words, and
  repeatedly merges the most frequent adjacent pair (ties: the smaller pair of strings). Pair
  counts are updated only for the words holding the merged pair, and a lazy max-heap finds
  the next pair, so a 2k vocabulary on a megabyte of text takes seconds.
"""

from __future__ import annotations

import codecs
import heapq
import json
import os
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import regex

from ..errors import CheckpointError
from ._tokenizer_base import (
    VERY_LARGE_INTEGER,
    PreTrainedTokenizer,
    check_dir,
    load_from_folder,
    read_json,
)

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
VOCAB_NAME, MERGES_NAME = "vocab.json", "merges.txt"
_CACHE_LIMIT = 500_000  # distinct words remembered before the word cache starts afresh


def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 table: byte value -> the printable character that stands for it in tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {c: b for b, c in BYTE_ENCODER.items()}
_BYTE_SYMBOLS = [BYTE_ENCODER[b] for b in range(256)]


def _parse_merges(merges: Iterable[Any], where: str) -> list[tuple[str, str]]:
    out = []
    for n, item in enumerate(merges, 1):
        if isinstance(item, str):
            parts = item.split(" ")
        elif isinstance(item, (list, tuple)):
            parts = list(item)
        else:
            parts = [item]
        if len(parts) != 2 or not all(isinstance(p, str) and p for p in parts):
            raise CheckpointError(f"{where}: merge {n} is {item!r}; each merge must be two tokens, written 'a b' or [a, b]")
        out.append((parts[0], parts[1]))
    return out


def _read_merges_file(path: str) -> list[tuple[str, str]]:
    if not os.path.isfile(path):
        raise CheckpointError(f"GPT2Tokenizer: merges file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    while lines and not lines[-1]:
        lines.pop()
    try:
        return _parse_merges(lines, f"merges file {path}")
    except CheckpointError as e:
        raise CheckpointError(f"{e} (merges.txt holds one 'left right' pair per line after '#version: 0.2')") from None


class GPT2Tokenizer(PreTrainedTokenizer):
    """Byte-level BPE tokenizer, file-compatible with transformers' ``GPT2Tokenizer``.

    Args:
        vocab_file, merges_file: ``vocab.json`` (token -> id) and ``merges.txt`` (ranked pairs).
        vocab, merges: the same in memory (a dict, and "a b" strings or (a, b) pairs).
        errors: how invalid UTF-8 is decoded (``bytes.decode``'s ``errors``).
        add_prefix_space: put a space before text that does not start with one.
        add_bos_token: start every encoded sequence with ``bos_token``.
        pattern: the pre-tokenization regex (GPT-2's by default). Another pattern is saved in
            tokenizer_config.json, which transformers ignores (it reads one only from tokenizer.json).
        ignore_merges: a word that is itself in the vocabulary maps to that id directly.

    Example::

        tok = GPT2Tokenizer.from_pretrained("gpt2_dir")
        ids = tok.encode("In the beginning God created the heaven and the earth.")
        assert tok.decode(ids) == "In the beginning God created the heaven and the earth."
    """

    model_input_names = ("input_ids", "attention_mask")
    _config_keys = ("add_prefix_space", "add_bos_token", "errors")

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        merges_file: str | os.PathLike | None = None,
        errors: str = "replace",
        unk_token: Any = "<|endoftext|>",
        bos_token: Any = "<|endoftext|>",
        eos_token: Any = "<|endoftext|>",
        pad_token: Any = None,
        add_prefix_space: bool = False,
        add_bos_token: bool = False,
        *,
        vocab: Mapping[str, int] | None = None,
        merges: Iterable[Any] | None = None,
        pattern: str | None = None,
        ignore_merges: bool = False,
        additional_special_tokens: Iterable[Any] = (),
        model_max_length: int = VERY_LARGE_INTEGER,
        padding_side: str = "right",
        truncation_side: str = "right",
    ) -> None:
        if (vocab_file is None) == (vocab is None) or (merges_file is None) == (merges is None):
            raise ValueError("GPT2Tokenizer needs vocab_file or vocab, and merges_file or merges (exactly one of each)")
        if vocab is None:
            vocab = read_json(os.fspath(vocab_file), "GPT2Tokenizer vocab_file")
        pairs = _read_merges_file(os.fspath(merges_file)) if merges is None else _parse_merges(merges, "GPT2Tokenizer merges")
        vocab = _check_vocab(vocab, os.fspath(vocab_file) if vocab_file is not None else "vocab")
        for n, (a, b) in enumerate(pairs, 1):
            missing = [t for t in (a, b, a + b) if t not in vocab]
            if missing:
                raise CheckpointError(f"GPT2Tokenizer: merge {n} ({a!r} {b!r}) uses {missing}, which the vocabulary lacks")
        try:
            codecs.lookup_error(errors)
        except LookupError:
            raise ValueError(f"errors={errors!r} is not a codec error handler; use 'replace', 'strict' or 'ignore'") from None
        self.errors = errors
        self.add_prefix_space = bool(add_prefix_space)
        self.add_bos_token = bool(add_bos_token)
        self.pattern = GPT2_PATTERN if pattern is None else pattern
        self.ignore_merges = bool(ignore_merges)
        self._words = _WordSplitter(pattern)
        self._ranks = {pair: rank for rank, pair in reversed(list(enumerate(pairs)))}  # first occurrence wins
        self._cache: dict[str, tuple[int, ...]] = {}
        specials = {"unk_token": unk_token, "bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token}
        self._init_base(dict(vocab), specials, additional_special_tokens, model_max_length, padding_side, truncation_side)

    @property
    def merges(self) -> list[tuple[str, str]]:
        """The merge list, lowest rank (applied first) first."""
        return sorted(self._ranks, key=self._ranks.__getitem__)

    def get_merges(self) -> list[tuple[str, str]]:
        return self.merges

    # ---------------------------------------------------------------------------- encode
    def _bpe(self, word: str) -> tuple[int, ...]:
        symbols = [BYTE_ENCODER[b] for b in word.encode("utf-8")]
        joined = "".join(symbols)
        if self.ignore_merges and joined in self._vocab:
            return (self._vocab[joined],)
        ranks = self._ranks
        while len(symbols) > 1:
            best, best_rank = None, None
            for pair in zip(symbols, symbols[1:]):
                rank = ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = pair, rank
            if best is None:
                break
            a, b = best
            merged, i, n = [], 0, len(symbols)
            while i < n:
                if i + 1 < n and symbols[i] == a and symbols[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(self._token_to_id(s) for s in symbols)

    def _encode_text(self, text: str) -> list[int]:
        if self.add_prefix_space and not text.startswith(" "):
            text = " " + text
        cache, ids = self._cache, []
        for word in self._words(text):
            found = cache.get(word)
            if found is None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                found = cache[word] = self._bpe(word)
            ids.extend(found)
        return ids

    def build_inputs_with_special_tokens(self, ids: list[int], pair_ids: list[int] | None = None) -> list[int]:
        bos = [self.bos_token_id] if self.add_bos_token and self.bos_token_id is not None else []
        return bos + ids + ([] if pair_ids is None else bos + pair_ids)

    def create_token_type_ids_from_sequences(self, ids: list[int], pair_ids: list[int] | None = None) -> list[int]:
        return [0] * len(self.build_inputs_with_special_tokens(ids, pair_ids))

    # ---------------------------------------------------------------------------- decode
    def _decode_tokens(self, tokens: list[str]) -> str:
        data = bytearray()
        for token in tokens:
            try:
                data.extend(BYTE_DECODER[c] for c in token)
            except KeyError:  # an added token written in plain text
                data.extend(token.encode("utf-8"))
        return data.decode("utf-8", errors=self.errors)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self._decode_tokens(tokens)

    # ---------------------------------------------------------------------------- files
    def _config(self) -> dict[str, Any]:
        config = super()._config()
        if self.pattern != GPT2_PATTERN:
            config["pattern"] = self.pattern
        if self.ignore_merges:
            config["ignore_merges"] = True
        return config

    def _save_vocabulary(self, directory: str) -> list[str]:
        vocab_path, merges_path = os.path.join(directory, VOCAB_NAME), os.path.join(directory, MERGES_NAME)
        with open(vocab_path, "w", encoding="utf-8") as f:
            json.dump(self._vocab, f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        with open(merges_path, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            f.writelines(f"{a} {b}\n" for a, b in self.merges)
        return [vocab_path, merges_path]

    @classmethod
    def from_pretrained(cls, pretrained_dir: str | os.PathLike, **kwargs: Any) -> "GPT2Tokenizer":
        """Load a folder: ``vocab.json`` + ``merges.txt``, or else ``tokenizer.json``; plus
        ``tokenizer_config.json`` when present. Keyword arguments override the saved config."""
        what = "GPT2Tokenizer.from_pretrained"
        d = check_dir(pretrained_dir, what, "vocab.json + merges.txt or tokenizer.json")
        return load_from_folder(cls, d, what, (VOCAB_NAME, MERGES_NAME), "vocab.json + merges.txt",
                                extra_keys=("pattern", "ignore_merges"), foreign_keys=("sep_token", "cls_token", "mask_token"),
                                kwargs=kwargs)  # fmt: skip

    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike, **kwargs: Any) -> "GPT2Tokenizer":
        """Read a Hugging Face ``tokenizers`` file whose model is byte-level BPE.

        Handles a ``ByteLevel`` pre-tokenizer (GPT-2), or a regex ``Split`` followed by
        ``ByteLevel(use_regex=false)`` (GPT-4/LLaMA-3 style); ``added_tokens`` keep their ids.
        """
        path = os.fspath(path)
        data = read_json(path, "GPT2Tokenizer.from_tokenizer_json")
        model = data.get("model") or {}
        if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
            raise CheckpointError(f"{path}: model type is {model.get('type')!r}; GPT2Tokenizer reads byte-level BPE models only")
        if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix") or model.get("byte_fallback"):
            raise CheckpointError(
                f"{path}: BPE options continuing_subword_prefix/end_of_word_suffix/byte_fallback are not byte-level"
            )
        if data.get("normalizer") is not None:
            raise CheckpointError(
                f"{path}: normalizer {data['normalizer'].get('type')!r} is not supported (byte-level BPE has none)"
            )
        options = _read_pre_tokenizer(data.get("pre_tokenizer"), path)
        added_tokens = sorted(data.get("added_tokens") or [], key=lambda t: t["id"])
        known = set(model["vocab"]) | {t["content"] for t in added_tokens}
        bos = _template_bos(data.get("post_processor"), path)
        if bos is not None:
            options.update(add_bos_token=True, bos_token=bos)
        for attr in ("unk_token", "bos_token", "eos_token"):
            if attr not in options and "<|endoftext|>" not in known:
                options[attr] = None  # GPT-2's default would invent a token this vocabulary lacks
        options["ignore_merges"] = bool(model.get("ignore_merges", False))
        tok = cls(vocab=model["vocab"], merges=model.get("merges") or [], **{**options, **kwargs})
        for entry in added_tokens:
            tok._register(entry["content"], special=bool(entry.get("special")), token_id=int(entry["id"]))
        return tok


def _check_vocab(vocab: Any, where: str) -> dict[str, int]:
    if not isinstance(vocab, Mapping):
        raise CheckpointError(f"{where}: the vocabulary must map token strings to ids, got {type(vocab).__name__}")
    bad = [(t, i) for t, i in vocab.items() if not isinstance(t, str) or not isinstance(i, int) or i < 0]
    if bad:
        raise CheckpointError(f"{where}: vocabulary entries must be str -> non-negative int; bad: {bad[:5]}")
    seen: dict[int, str] = {}
    for token, i in vocab.items():
        if i in seen:
            raise CheckpointError(f"{where}: tokens {seen[i]!r} and {token!r} share id {i}; ids must be unique")
        seen[i] = token
    return dict(vocab)


class _WordSplitter:
    """Pre-tokenization: GPT-2's regex matches, or for another pattern the matches plus the text
    between them (``tokenizers`` Split, 'Isolated'). A class, not a closure, so it pickles."""

    def __init__(self, pattern: str | None) -> None:
        self.pattern = GPT2_PATTERN if pattern is None else pattern
        self._isolate = self.pattern != GPT2_PATTERN  # GPT-2's regex matches every character: findall suffices
        self._re = regex.compile(self.pattern)

    def __call__(self, text: str) -> list[str]:
        if not self._isolate:
            return self._re.findall(text)
        out, start = [], 0
        for m in self._re.finditer(text):
            if m.start() > start:
                out.append(text[start : m.start()])
            if m.end() > m.start():
                out.append(m.group())
            start = m.end()
        if start < len(text):
            out.append(text[start:])
        return out


def _read_pre_tokenizer(pre: Any, path: str) -> dict[str, Any]:
    steps = (pre or {}).get("pretokenizers", []) if (pre or {}).get("type") == "Sequence" else [pre]
    kinds = [s.get("type") if isinstance(s, dict) else None for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return {"add_prefix_space": bool(steps[0].get("add_prefix_space", False))}
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        split = steps[0]
        pattern = (split.get("pattern") or {}).get("Regex")
        if pattern and split.get("behavior") == "Isolated" and not split.get("invert"):
            return {"pattern": pattern, "add_prefix_space": bool(steps[1].get("add_prefix_space", False))}
    raise CheckpointError(
        f"{path}: pre_tokenizer {kinds} is not supported; "
        "expected ByteLevel, or Split(regex, Isolated) + ByteLevel(use_regex=false)"
    )


def _template_bos(post: Any, path: str) -> str | None:
    """The BOS token of a TemplateProcessing post-processor that prepends one, else None."""
    if not post:
        return None
    steps = post.get("processors", []) if post.get("type") == "Sequence" else [post]
    for step in steps:
        if step.get("type") != "TemplateProcessing":
            continue
        single = step.get("single") or []
        if len(single) == 2 and "SpecialToken" in single[0] and "Sequence" in single[1]:
            return single[0]["SpecialToken"]["id"]
        if len(single) != 1:
            raise CheckpointError(f"{path}: post-processor template {single} is not supported (only '<bos> $A')")
    return None


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    special_tokens: Sequence[str] = ("<|endoftext|>",),
    min_frequency: int = 2,
    pattern: str | None = None,
) -> GPT2Tokenizer:
    """Train a byte-level BPE vocabulary of ``vocab_size`` tokens (256 bytes + merges + specials).

    Merging stops early when the most frequent pair occurs fewer than ``min_frequency`` times.
    Special tokens get the last ids and are never split or learned from; the first one becomes
    the unk/bos/eos token. Deterministic: the same texts give the same vocabulary.

    Example::

        with open("examples/data/kjv_pentateuch.txt") as f:
            tok = train_bpe(f, vocab_size=1024)
        tok.save_pretrained("kjv_tokenizer")  # loads in transformers.GPT2Tokenizer too
    """
    specials = list(dict.fromkeys(special_tokens))
    if not all(isinstance(s, str) and s for s in specials):
        raise ValueError(f"special_tokens must be non-empty strings, got {special_tokens!r}")
    if int(vocab_size) < 256 + len(specials):
        raise ValueError(f"vocab_size={vocab_size} is below the 256 byte symbols + {len(specials)} special tokens")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
    words_of = _WordSplitter(pattern)
    cut = regex.compile("|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True))) if specials else None
    counts: Counter[str] = Counter()
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"train_bpe: texts must yield str, got {type(text).__name__}")
        for piece in cut.split(text) if cut is not None else (text,):
            counts.update(words_of(piece))
    symbols = sorted(_BYTE_SYMBOLS)  # ids in GPT-2's order ("!" = 0)
    merges = _learn_merges(counts, symbols, int(vocab_size) - len(specials), min_frequency)
    vocab = {s: i for i, s in enumerate(symbols)}
    for s in specials:
        vocab.setdefault(s, len(vocab))
    first = specials[0] if specials else None
    return GPT2Tokenizer(
        vocab=vocab, merges=merges, unk_token=first, bos_token=first, eos_token=first,
        pattern=pattern, additional_special_tokens=specials,
    )  # fmt: skip


def _learn_merges(counts: Mapping[str, int], symbols: list[str], target: int, min_frequency: int) -> list[tuple[str, str]]:
    """Grow ``symbols`` (in place) to ``target`` entries by merging; return the merges in order."""
    index = {s: i for i, s in enumerate(symbols)}
    words = [[index[BYTE_ENCODER[b]] for b in w.encode("utf-8")] for w in counts]
    freq = list(counts.values())
    pair_count: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for wi, (word, c) in enumerate(zip(words, freq)):
        for pair in zip(word, word[1:]):
            pair_count[pair] = pair_count.get(pair, 0) + c
            where.setdefault(pair, set()).add(wi)

    def entry(pair: tuple[int, int]) -> tuple[int, str, str, tuple[int, int]]:
        return (-pair_count[pair], symbols[pair[0]], symbols[pair[1]], pair)

    heap = [entry(p) for p in pair_count]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    done: set[tuple[int, int]] = set()
    while len(symbols) < target and heap:
        neg, _, _, pair = heapq.heappop(heap)
        current = pair_count.get(pair, 0)
        if current != -neg:  # stale: counts only fall, so re-queue at the true count
            if current > 0:
                heapq.heappush(heap, entry(pair))
            continue
        if current < min_frequency:
            break
        a, b = pair
        text = symbols[a] + symbols[b]
        new = index.get(text)
        if new is None:
            new = index[text] = len(symbols)
            symbols.append(text)
        if pair not in done:  # a pair can come back when a merge re-creates an existing token
            done.add(pair)
            merges.append((symbols[a], symbols[b]))
        touched: set[tuple[int, int]] = set()
        for wi in where.pop(pair):
            word, c = words[wi], freq[wi]
            merged, i, n = [], 0, len(word)
            while i < n:
                if i + 1 < n and word[i] == a and word[i + 1] == b:
                    merged.append(new)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            if len(merged) == n:
                continue  # stale membership: the pair left this word earlier
            for p in zip(word, word[1:]):
                pair_count[p] -= c
            for p in zip(merged, merged[1:]):
                pair_count[p] = pair_count.get(p, 0) + c
                if new in p:
                    where.setdefault(p, set()).add(wi)
                    touched.add(p)
            words[wi] = merged
        pair_count.pop(pair, None)
        for p in touched:
            if pair_count.get(p, 0) > 0:
                heapq.heappush(heap, entry(p))
    return merges
