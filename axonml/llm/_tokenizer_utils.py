"""Helpers of the tokenizers' base class (``_tokenizer_base.py``): the ``BatchEncoding`` a tokenizer
returns, special-token properties, argument checks (padding, truncation, sides), batch shaping,
tensors out, and reading JSON files, folders and ``tokenizer_config.json``."""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import CheckpointError
from ..tensor import Tensor, tensor

SPECIAL_TOKEN_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
TOKENIZER_JSON_NAME = "tokenizer.json"
VERY_LARGE_INTEGER = int(1e30)  # "no limit", as transformers writes it
_TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")


class BatchEncoding(dict):
    """The dict a tokenizer returns (``input_ids``, ``attention_mask``, maybe ``token_type_ids``),
    with attribute access: ``enc.input_ids``. ``to(device)`` moves tensor values."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no field {name!r}; it has {sorted(self)}") from None

    def to(self, device: Any) -> "BatchEncoding":
        return BatchEncoding({k: v.to(device) if isinstance(v, Tensor) else v for k, v in self.items()})


def _special_property(attr: str) -> property:
    def fget(self: Any) -> str | None:
        return self._special_tokens.get(attr)

    def fset(self: Any, value: str | None) -> None:
        self._set_special_token(attr, value)

    return property(fget, fset, doc=f"The {attr.replace('_', ' ')} (settable, e.g. ``tok.pad_token = tok.eos_token``).")


def _special_id_property(attr: str) -> property:
    def fget(self: Any) -> int | None:
        token = self._special_tokens.get(attr)
        return None if token is None else self._token_id_or_none(token)

    return property(fget, doc=f"The id of the {attr.replace('_', ' ')}, or None when it is unset.")


def _token_content(token: Any) -> str | None:
    """A token given as a string, or as transformers' serialized AddedToken dict."""
    if token is None or isinstance(token, str):
        return token
    if isinstance(token, Mapping) and isinstance(token.get("content"), str):
        return token["content"]
    raise TypeError(f"a special token must be a str (or an AddedToken dict with 'content'), got {token!r}")


def read_json(path: str, what: str) -> Any:
    """Load a JSON file with errors that name the file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{what}: file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{what}: {path} is not valid JSON ({e})") from None


def check_dir(directory: str | os.PathLike, what: str, needs: str) -> str:
    d = os.fspath(directory)
    if not os.path.isdir(d):
        raise CheckpointError(f"{what}: {d!r} is not a directory; give a folder holding {needs}")
    return d


def _check_side(name: str, side: str) -> str:
    if side not in ("left", "right"):
        raise ValueError(f"{name} must be 'left' or 'right', got {side!r}")
    return side


def _truncation_strategy(truncation: Any) -> str:
    if truncation is True:
        return "longest_first"
    if truncation is False or truncation is None:
        return "do_not_truncate"
    if truncation in _TRUNCATION_STRATEGIES:
        return truncation
    raise ValueError(f"truncation must be True/False or one of {_TRUNCATION_STRATEGIES}, got {truncation!r}")


def _padding_target(padding: Any, lengths: list[int], max_length: int | None, model_max: int, multiple: int | None) -> int | None:
    if padding is False or padding is None or padding == "do_not_pad":
        target = None
    elif padding is True or padding == "longest":
        target = max(lengths, default=0)
    elif padding == "max_length":
        target = max_length if max_length is not None else model_max
        if target >= VERY_LARGE_INTEGER:
            raise ValueError("padding='max_length' needs max_length=... (the tokenizer has no model_max_length)")
    else:
        raise ValueError(f"padding must be True/False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
    if target is not None and multiple:
        target = -(-target // multiple) * multiple
    return target


def _as_text_list(text: Any, name: str) -> list[str]:
    items = [text] if isinstance(text, str) else text
    if not isinstance(items, (list, tuple)) or not all(isinstance(t, str) for t in items):
        raise TypeError(f"{name} must be a str or a list/tuple of str, got {type(text).__name__}: {text!r:.80}")
    return list(items)


def _as_id_list(ids: Any) -> list[int]:
    if isinstance(ids, Tensor):
        ids = ids.numpy()
    if isinstance(ids, (int, np.integer)):
        return [int(ids)]
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise TypeError(
            f"expected a 1-D sequence of integer ids, got shape {arr.shape} dtype {arr.dtype}; use batch_decode for 2-D"
        )
    return [int(i) for i in arr]


def _as_rows(encoded: Any) -> list[dict[str, Sequence[int]]]:
    if isinstance(encoded, Mapping):
        ids = encoded["input_ids"]
        if _is_flat(ids):
            return [dict(encoded)]
        return [{k: encoded[k][i] for k in encoded} for i in range(len(ids))]
    rows = list(encoded)
    if not all(isinstance(r, Mapping) and "input_ids" in r for r in rows):
        raise TypeError("pad expects a list of dicts with 'input_ids' or a dict of lists")
    return [dict(r) for r in rows]


def _is_flat(ids: Any) -> bool:
    return len(ids) == 0 or isinstance(ids[0], (int, np.integer))


def _to_tensor(rows: list[list[int]], return_tensors: str | None, key: str) -> Any:
    if return_tensors is None:
        return rows
    if return_tensors not in ("np", "ax"):
        raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'ax' (axonml int64 tensors), 'np' or None")
    lengths = sorted({len(r) for r in rows})
    if len(lengths) > 1:
        raise ValueError(f"cannot stack {key} of lengths {lengths} into one tensor; pass padding=True (and truncation=True)")
    arr = np.array(rows, dtype=np.int64).reshape(len(rows), lengths[0] if lengths else 0)
    return arr if return_tensors == "np" else tensor(arr)


def read_tokenizer_config(directory: str, wanted: Iterable[str]) -> tuple[dict[str, Any], list[str], list[str]]:
    """(constructor kwargs, added tokens, added special tokens) from tokenizer_config.json if present."""
    path = os.path.join(directory, TOKENIZER_CONFIG_NAME)
    if not os.path.isfile(path):
        return {}, [], []
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"from_pretrained: {path} is not valid JSON ({e})") from None
    kwargs = {k: config[k] for k in wanted if k in config}
    for k in SPECIAL_TOKEN_ATTRIBUTES:
        if k in kwargs:
            kwargs[k] = _token_content(kwargs[k])
    added, added_special = [], []
    for _, entry in sorted(config.get("added_tokens_decoder", {}).items(), key=lambda kv: int(kv[0])):
        (added_special if entry.get("special") else added).append(entry["content"])
    return kwargs, added, added_special


def load_from_folder(
    cls: Any, d: str, what: str, native: tuple[str, ...], native_desc: str, extra_keys: tuple[str, ...],
    foreign_keys: tuple[str, ...], kwargs: dict[str, Any],
) -> Any:
    """The body of a tokenizer's ``from_pretrained`` on the folder ``d``: read ``tokenizer_config.json``
    (``cls._config_keys``, the special tokens, ``extra_keys`` and the base class's settings), build
    ``cls(*native files, ...)`` when the ``native`` files are there, else from ``tokenizer.json``
    (keyword arguments win over the saved config), then restore the special tokens that ``cls`` takes
    no constructor argument for (``foreign_keys``) and the added tokens. ``what`` starts the error."""
    wanted = (*cls._config_keys, *SPECIAL_TOKEN_ATTRIBUTES, *extra_keys, "model_max_length", "padding_side",
              "truncation_side", "additional_special_tokens")  # fmt: skip
    config, added, added_special = cls._read_config(d, wanted)
    foreign = {k: config.pop(k) for k in foreign_keys if k in config}
    paths = [os.path.join(d, name) for name in native]
    json_path = os.path.join(d, TOKENIZER_JSON_NAME)
    if all(os.path.isfile(path) for path in paths):
        tok = cls(*paths, **{**config, **kwargs})
    elif os.path.isfile(json_path):
        tok = cls.from_tokenizer_json(json_path, **{**config, **kwargs})
    else:
        have = sorted(os.listdir(d))[:20]
        raise CheckpointError(f"{what}: {d!r} has neither {native_desc} nor tokenizer.json (it has {have})")
    tok.add_special_tokens({k: v for k, v in foreign.items() if v is not None})
    tok.add_tokens(added)
    tok.add_tokens(added_special, special_tokens=True)
    return tok
