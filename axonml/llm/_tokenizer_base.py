"""What every tokenizer of this package shares: special and added tokens, batching, padding,
truncation, tensors out, and the ``tokenizer_config.json`` of a ``save_pretrained`` folder.

Note (behaviour follows Hugging Face transformers 5, whose tokenizers run on the Rust
``tokenizers`` library, so that a folder written here loads there with the same ids):

- Special and added tokens are cut out of the raw text first (leftmost, longest match) and
  never reach the normalizer, the pre-tokenizer or the subword model.
- ``max_length`` counts the special tokens a model adds ([CLS], [SEP]). A pair is truncated
  "longest first" the way ``tokenizers`` does it: the shorter side is kept when it fits in
  half the budget, else both get half (the odd token goes to the second).
- A single string gives flat lists; a list of strings gives lists of lists. With
  ``return_tensors`` a single string still gets a batch axis of 1.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import regex

from ..errors import CheckpointError
from ..tensor import Tensor
from ._tokenizer_utils import (
    SPECIAL_TOKEN_ATTRIBUTES,
    TOKENIZER_CONFIG_NAME,
    TOKENIZER_JSON_NAME,
    VERY_LARGE_INTEGER,
    BatchEncoding,
    _as_id_list,
    _as_rows,
    _as_text_list,
    _check_side,
    _is_flat,
    _padding_target,
    _special_id_property,
    _special_property,
    _to_tensor,
    _token_content,
    _truncation_strategy,
    check_dir,
    load_from_folder,
    read_json,
    read_tokenizer_config,
)


class PreTrainedTokenizer:
    """Base class: subclasses provide the vocabulary, ``_encode_text`` (plain text -> ids) and
    ``_decode_tokens`` (ordinary tokens -> text), and may override the special-token layout."""

    model_input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    _config_keys: tuple[str, ...] = ()  # constructor arguments saved in tokenizer_config.json

    bos_token = _special_property("bos_token")
    eos_token = _special_property("eos_token")
    unk_token = _special_property("unk_token")
    sep_token = _special_property("sep_token")
    pad_token = _special_property("pad_token")
    cls_token = _special_property("cls_token")
    mask_token = _special_property("mask_token")
    bos_token_id = _special_id_property("bos_token")
    eos_token_id = _special_id_property("eos_token")
    unk_token_id = _special_id_property("unk_token")
    sep_token_id = _special_id_property("sep_token")
    pad_token_id = _special_id_property("pad_token")
    cls_token_id = _special_id_property("cls_token")
    mask_token_id = _special_id_property("mask_token")

    def _init_base(
        self,
        vocab: dict[str, int],
        special_tokens: Mapping[str, Any],
        additional_special_tokens: Iterable[Any] = (),
        model_max_length: int = VERY_LARGE_INTEGER,
        padding_side: str = "right",
        truncation_side: str = "right",
    ) -> None:
        """Set the base vocabulary and register the special tokens (adding those it lacks)."""
        self._vocab = vocab
        self._inv_vocab = {i: t for t, i in vocab.items()}
        self._added: dict[str, int] = {}  # tokens outside the base vocabulary -> ids after it
        self._added_inv: dict[int, str] = {}
        self._special_tokens: dict[str, str | None] = {}
        self._additional_special: list[str] = []
        self._whole_tokens: set[str] = set()  # cut out of text before the subword model runs
        self._splitter: Any = None
        self.model_max_length = int(model_max_length)
        self.padding_side = _check_side("padding_side", padding_side)
        self.truncation_side = _check_side("truncation_side", truncation_side)
        for attr in SPECIAL_TOKEN_ATTRIBUTES:
            if attr in special_tokens:
                self._set_special_token(attr, special_tokens[attr])
        for token in additional_special_tokens:
            self._register(_token_content(token), special=True)

    # ----------------------------------------------------------------- vocabulary and special tokens
    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (without tokens added later)."""
        return len(self._vocab)

    def __len__(self) -> int:
        """Number of ids in use: base vocabulary plus added tokens."""
        top = max(self._inv_vocab, default=-1)
        return max(top, max(self._added_inv, default=-1)) + 1

    def get_vocab(self) -> dict[str, int]:
        """token -> id for the base vocabulary and the added tokens."""
        return {**self._vocab, **self._added}

    @property
    def additional_special_tokens(self) -> list[str]:
        return list(self._additional_special)

    @property
    def all_special_tokens(self) -> list[str]:
        """Every special token (named and additional), each once."""
        named = [t for t in self._special_tokens.values() if t is not None]
        return list(dict.fromkeys(named + self._additional_special))

    @property
    def all_special_ids(self) -> list[int]:
        return [self._token_id_or_none(t) for t in self.all_special_tokens]

    def _set_special_token(self, attr: str, value: Any) -> None:
        value = _token_content(value)
        self._special_tokens[attr] = value
        if value is not None:
            self._register(value, special=True)
        self._splitter = None

    def _register(self, token: str, special: bool, token_id: int | None = None) -> bool:
        """Keep ``token`` whole in text; give it the next free id (or ``token_id``) if it is new."""
        if not isinstance(token, str) or not token:
            raise ValueError(f"a token must be a non-empty string, got {token!r}")
        if special and token not in self._additional_special and token not in self._special_tokens.values():
            self._additional_special.append(token)
        self._splitter = None
        self._whole_tokens.add(token)
        known = self._token_id_or_none(token)
        if known is not None:
            if token_id is not None and token_id != known:
                raise CheckpointError(
                    f"added token {token!r} is declared with id {token_id} but the vocabulary has it at {known}"
                )
            return False
        new_id = len(self) if token_id is None else token_id
        holder = self._inv_vocab.get(new_id, self._added_inv.get(new_id))
        if holder is not None:
            raise CheckpointError(f"added token {token!r} wants id {new_id}, which {holder!r} already has")
        self._added[token], self._added_inv[new_id] = new_id, token
        return True

    def _split_tokens(self) -> set[str]:
        return self._whole_tokens

    def add_tokens(self, new_tokens: str | Sequence[str], special_tokens: bool = False) -> int:
        """Add tokens kept whole in text; ids follow the vocabulary. Returns how many were new.

        Example: ``n = tok.add_tokens(["<think>"]); model.resize_token_embeddings(len(tok))``
        """
        tokens = [new_tokens] if isinstance(new_tokens, str) else list(new_tokens)
        return sum(self._register(_token_content(t), special=special_tokens) for t in tokens)

    def add_special_tokens(self, special_tokens_dict: Mapping[str, Any]) -> int:
        """Set named special tokens (``{"pad_token": "[PAD]"}``) or ``additional_special_tokens``."""
        before = len(self)
        for attr, value in special_tokens_dict.items():
            if attr == "additional_special_tokens":
                for token in value:
                    self._register(_token_content(token), special=True)
            elif attr in SPECIAL_TOKEN_ATTRIBUTES:
                self._set_special_token(attr, value)
            else:
                raise ValueError(
                    f"unknown special token {attr!r}; use one of {SPECIAL_TOKEN_ATTRIBUTES} or additional_special_tokens"
                )
        return len(self) - before

    def _token_id_or_none(self, token: str) -> int | None:
        found = self._vocab.get(token)
        return self._added.get(token) if found is None else found

    def _token_to_id(self, token: str) -> int:
        found = self._token_id_or_none(token)
        if found is not None:
            return found
        unk = self.unk_token_id
        if unk is None:
            raise KeyError(f"token {token!r} is not in the vocabulary and the tokenizer has no unk_token to stand for it")
        return unk

    def _id_to_token(self, index: int) -> str:
        token = self._inv_vocab.get(index)
        if token is None:
            token = self._added_inv.get(index)
        if token is None:
            raise ValueError(
                f"token id {index} is not in the vocabulary (ids 0..{len(self) - 1}); was it produced by another tokenizer?"
            )
        return token

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """One token -> its id; a list of tokens -> a list of ids (unknown tokens -> unk id)."""
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        """One id -> its token string; a list of ids -> a list of tokens."""
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token(int(ids))
        special = set(self.all_special_tokens) if skip_special_tokens else ()
        tokens = [self._id_to_token(i) for i in _as_id_list(ids)]
        return [t for t in tokens if t not in special]

    # ------------------------------------------------------------------------------- encoding
    def _split_on_whole_tokens(self, text: str) -> list[tuple[str, int | None]]:
        """Cut added/special tokens out of ``text``: [(piece, None) | (token, id)], leftmost-longest."""
        whole = self._split_tokens()
        if not whole:
            return [(text, None)] if text else []
        if self._splitter is None:
            ordered = sorted(whole, key=lambda t: (-len(t), t))
            self._splitter = regex.compile("|".join(regex.escape(t) for t in ordered))
        out: list[tuple[str, int | None]] = []
        start = 0
        for m in self._splitter.finditer(text):
            if m.start() > start:
                out.append((text[start : m.start()], None))
            out.append((m.group(), self._token_id_or_none(m.group())))
            start = m.end()
        if start < len(text):
            out.append((text[start:], None))
        return out

    def _encode_text(self, text: str) -> list[int]:
        """Plain text (no added tokens inside) -> ids. Implemented by subclasses."""
        raise NotImplementedError

    def _text_to_ids(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}: {text!r:.80}")
        ids: list[int] = []
        for piece, token_id in self._split_on_whole_tokens(text):
            if token_id is not None:
                ids.append(token_id)
            else:
                ids.extend(self._encode_text(piece))
        return ids

    def tokenize(self, text: str) -> list[str]:
        """Text -> token strings, without the special tokens a model adds."""
        return [self._id_to_token(i) for i in self._text_to_ids(text)]

    def build_inputs_with_special_tokens(self, ids: list[int], pair_ids: list[int] | None = None) -> list[int]:
        """Wrap ids in the model's special tokens; the base adds none."""
        return ids + (pair_ids or [])

    def create_token_type_ids_from_sequences(self, ids: list[int], pair_ids: list[int] | None = None) -> list[int]:
        return [0] * len(ids) + [1] * len(pair_ids or [])

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return len(self.build_inputs_with_special_tokens([], [] if pair else None))

    def _encode_one(
        self, text: str, pair: str | None, add_special_tokens: bool, truncation: Any, max_length: int | None
    ) -> dict[str, list[int]]:
        ids = self._text_to_ids(text)
        pair_ids = None if pair is None else self._text_to_ids(pair)
        strategy = _truncation_strategy(truncation)
        limit = max_length if max_length is not None else (self.model_max_length if strategy != "do_not_truncate" else None)
        if strategy != "do_not_truncate" and limit is not None and limit < VERY_LARGE_INTEGER:
            extra = self.num_special_tokens_to_add(pair_ids is not None) if add_special_tokens else 0
            ids, pair_ids = self._truncate(ids, pair_ids, int(limit) - extra, strategy, int(limit))
        if add_special_tokens:
            input_ids = self.build_inputs_with_special_tokens(ids, pair_ids)
            types = self.create_token_type_ids_from_sequences(ids, pair_ids)
        else:
            input_ids = ids + (pair_ids or [])
            types = [0] * len(ids) + [1] * len(pair_ids or [])
        return {"input_ids": input_ids, "token_type_ids": types}

    def _truncate(
        self, ids: list[int], pair_ids: list[int] | None, budget: int, strategy: str, max_length: int
    ) -> tuple[list[int], list[int] | None]:
        if budget < 0:
            raise ValueError(
                f"max_length={max_length} leaves no room: the model adds {max_length - budget} special tokens; raise max_length"
            )
        n1, n2 = len(ids), len(pair_ids or [])
        if n1 + n2 <= budget:
            return ids, pair_ids
        if strategy == "only_second" and pair_ids is None:
            raise ValueError("truncation='only_second' needs a text_pair; use truncation=True for single texts")
        if pair_ids is None:
            return self._cut(ids, budget), None
        if strategy == "only_first":
            keep1, keep2 = budget - n2, n2
            if keep1 < 1:  # like tokenizers: at least one token of the truncated sequence must stay
                raise ValueError(f"truncation='{strategy}' cannot fit: the other sequence alone has {n2} of {budget} tokens")
        elif strategy == "only_second":
            keep1, keep2 = n1, budget - n1
            if keep2 < 1:
                raise ValueError(f"truncation='only_second' cannot fit: the first sequence alone has {n1} of {budget} tokens")
        else:  # longest_first, as the Rust tokenizers library computes it
            short, long_ = sorted((n1, n2))
            long_ = short if short > budget else max(short, budget - short)
            if short + long_ > budget:
                short, long_ = budget // 2, budget // 2 + budget % 2
            keep1, keep2 = (long_, short) if n1 > n2 else (short, long_)
        return self._cut(ids, keep1), self._cut(pair_ids, keep2)

    def _cut(self, ids: list[int], keep: int) -> list[int]:
        if len(ids) <= keep:
            return ids
        return ids[:keep] if self.truncation_side == "right" else ids[len(ids) - keep :]

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        truncation: bool | str = False,
        max_length: int | None = None,
    ) -> list[int]:
        """Text (and optionally a second text) -> a list of ids, with the model's special tokens."""
        return self._encode_one(text, text_pair, add_special_tokens, truncation, max_length)["input_ids"]

    def encode_batch(self, texts: Iterable[str], add_special_tokens: bool = True) -> list[list[int]]:
        """Many texts -> many id lists (the word cache makes repeated words cheap)."""
        return [self.encode(t, add_special_tokens=add_special_tokens) for t in texts]

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool = True,
        return_token_type_ids: bool | None = None,
    ) -> BatchEncoding:
        """Tokenize one text or a batch: ``input_ids``, ``attention_mask`` (and ``token_type_ids``).

        ``padding``: False, True/"longest", or "max_length"; ``truncation``: True/"longest_first",
        "only_first", "only_second"; ``return_tensors``: None (lists), "np" or "ax" (int64).

        Example::

            batch = tok(["In the beginning", "God"], padding=True, padding_side="left", return_tensors="ax")
            model(batch.input_ids, attention_mask=batch.attention_mask)
        """
        batched = not isinstance(text, str)
        texts = _as_text_list(text, "text")
        pairs: list[Any] = [None] * len(texts)
        if text_pair is not None:
            pairs = _as_text_list(text_pair, "text_pair")
            if isinstance(text_pair, str) == batched or len(pairs) != len(texts):
                raise ValueError(
                    f"text and text_pair must both be strings or lists of equal length; got {len(texts)} and {len(pairs)}"
                )
        encs = [self._encode_one(t, p, add_special_tokens, truncation, max_length) for t, p in zip(texts, pairs)]
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if not return_token_type_ids:
            for e in encs:
                e.pop("token_type_ids")
        out = self.pad(
            encs,
            padding=padding,
            max_length=max_length,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            return_attention_mask=return_attention_mask,
            return_tensors=return_tensors,
        )
        if not batched and return_tensors is None:
            return BatchEncoding({k: v[0] for k, v in out.items()})
        return out

    def pad(
        self,
        encoded_inputs: Sequence[Mapping[str, Sequence[int]]] | Mapping[str, Any],
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool = True,
        return_tensors: str | None = None,
    ) -> BatchEncoding:
        """Pad a batch (list of dicts or dict of lists) to one length; add ``attention_mask``."""
        rows = _as_rows(encoded_inputs)
        single = isinstance(encoded_inputs, Mapping) and _is_flat(encoded_inputs["input_ids"])
        side = _check_side("padding_side", padding_side or self.padding_side)
        lengths = [len(r["input_ids"]) for r in rows]
        target = _padding_target(padding, lengths, max_length, self.model_max_length, pad_to_multiple_of)
        if target is not None and any(n < target for n in lengths) and self.pad_token_id is None:
            raise ValueError(
                "asking to pad but the tokenizer has no pad_token; set one, e.g. tokenizer.pad_token = tokenizer.eos_token"
            )
        pad_values = {"input_ids": self.pad_token_id, "token_type_ids": 0, "attention_mask": 0, "special_tokens_mask": 1}
        out: dict[str, list[list[int]]] = {}
        for r, n in zip(rows, lengths):
            fields = dict(r)
            if return_attention_mask and "attention_mask" not in fields:
                fields["attention_mask"] = [1] * n
            for key, seq in fields.items():
                seq = list(seq)
                gap = 0 if target is None else target - n
                if gap > 0:
                    fill = [pad_values.get(key, 0)] * gap
                    seq = seq + fill if side == "right" else fill + seq
                out.setdefault(key, []).append(seq)
        if single and return_tensors is None:
            return BatchEncoding({k: v[0] for k, v in out.items()})
        return BatchEncoding({k: _to_tensor(v, return_tensors, k) for k, v in out.items()})

    # ------------------------------------------------------------------------------- decoding
    def _decode_tokens(self, tokens: list[str]) -> str:
        """Ordinary (non-added) tokens -> text. Implemented by subclasses."""
        raise NotImplementedError

    def decode(self, token_ids: Any, skip_special_tokens: bool = False) -> str:
        """Ids (list, NumPy array or 1-D Tensor) -> text.

        Example: ``tok.decode(tok.encode("In the beginning")) == "In the beginning"``
        """
        tokens = self.convert_ids_to_tokens(_as_id_list(token_ids), skip_special_tokens=skip_special_tokens)
        return self._decode_tokens(tokens)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> list[str]:
        """A batch of id sequences (list of lists, 2-D array or Tensor) -> texts."""
        if isinstance(sequences, Tensor):
            sequences = sequences.numpy()
        return [self.decode(s, skip_special_tokens=skip_special_tokens) for s in sequences]

    # ------------------------------------------------------------------------------- files
    _read_config = staticmethod(read_tokenizer_config)  # (kwargs, added, added special) from tokenizer_config.json

    def _save_vocabulary(self, directory: str) -> list[str]:
        raise NotImplementedError

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"tokenizer_class": type(self).__name__}
        config.update({k: getattr(self, k) for k in self._config_keys})
        config.update({k: v for k, v in self._special_tokens.items()})
        named = set(self._special_tokens.values())
        extra = [t for t in self._additional_special if t not in named]
        if extra:
            config["additional_special_tokens"] = extra
        config.update(
            model_max_length=self.model_max_length, padding_side=self.padding_side, truncation_side=self.truncation_side
        )
        special = set(self.all_special_tokens)
        decoder = {}
        for token in sorted(self._split_tokens(), key=self._token_to_id):
            decoder[str(self._token_to_id(token))] = {
                "content": token, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                "special": token in special,
            }  # fmt: skip
        config["added_tokens_decoder"] = decoder
        return config

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        """Write the vocabulary files and ``tokenizer_config.json``; transformers loads the folder."""
        d = os.fspath(save_directory)
        if os.path.isfile(d):
            raise CheckpointError(f"save_pretrained: {d!r} is a file; give a directory")
        os.makedirs(d, exist_ok=True)
        files = self._save_vocabulary(d)
        path = os.path.join(d, TOKENIZER_CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self._config(), f, indent=2, ensure_ascii=False)
            f.write("\n")
        return (*files, path)


# the names bpe.py, wordpiece.py and the package's __init__ import from here (some defined in _tokenizer_utils)
__all__ = [
    "SPECIAL_TOKEN_ATTRIBUTES", "TOKENIZER_CONFIG_NAME", "TOKENIZER_JSON_NAME", "VERY_LARGE_INTEGER", "BatchEncoding",
    "PreTrainedTokenizer", "check_dir", "load_from_folder", "read_json",
]
