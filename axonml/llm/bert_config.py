"""``BertConfig``: the hyper-parameters of BERT (``bert.py``, ``bert_heads.py``), under the key names
of transformers' ``BertConfig`` / config.json, with the published sizes; ``activation`` applies a
``hidden_act``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..nn import functional as F
from ..tensor import Tensor

_ACT_FNS = {
    "gelu": F.gelu,  # the exact erf form
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": F.tanh,
}
_ACTIVATIONS = tuple(_ACT_FNS)
# published sizes: (vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size)
_PRESETS = {
    "bert-base-uncased": (30522, 768, 12, 12, 3072),
    "bert-large-uncased": (30522, 1024, 24, 16, 4096),
    "bert-base-cased": (28996, 768, 12, 12, 3072),
    "bert-large-cased": (28996, 1024, 24, 16, 4096),
}
_TINY = dict(
    vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64
)

@dataclass(frozen=True)
class BertConfig:
    """BERT hyper-parameters, under the key names of transformers' ``BertConfig`` / config.json.

    ``num_labels``/``problem_type``/``classifier_dropout`` concern ``BertForSequenceClassification``
    (``problem_type`` None: regression for one label, else single-label for integer labels and
    multi-label for float labels). ``id2label`` optionally names the classes.

    Example::

        BertConfig.from_name("bert-base-uncased")            # 110M
        BertConfig.from_name("tiny", num_labels=3)           # a test-sized model
        dataclasses.replace(config, hidden_dropout_prob=0.0)  # configs are frozen: derive new ones
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    num_labels: int = 2
    problem_type: str | None = None
    classifier_dropout: float | None = None
    tie_word_embeddings: bool = True
    id2label: dict[int, str] | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "num_labels"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"BertConfig: {name} must be a positive int, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"BertConfig: hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                             f"({self.num_attention_heads})")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"BertConfig: hidden_act {self.hidden_act!r} is not supported; use one of {_ACTIVATIONS}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"BertConfig: {name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"BertConfig: classifier_dropout must be None or in [0, 1), got {self.classifier_dropout!r}")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"BertConfig: layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"BertConfig: pad_token_id {self.pad_token_id} is outside the vocabulary [0, {self.vocab_size})")
        kinds = (None, "regression", "single_label_classification", "multi_label_classification")
        if self.problem_type not in kinds:
            raise ValueError(f"BertConfig: problem_type {self.problem_type!r} must be one of {kinds}")
        if self.id2label is not None and len(self.id2label) != self.num_labels:
            raise ValueError(f"BertConfig: id2label names {len(self.id2label)} classes but num_labels is {self.num_labels}; "
                             f"give one name per label")

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "BertConfig":
        """A published size ("bert-base-uncased", "bert-large-uncased", "-cased" variants) or "tiny" (tests)."""
        if name == "tiny":
            base: dict[str, Any] = dict(_TINY)
        elif name in _PRESETS:
            vocab, hidden, layers, heads, inner = _PRESETS[name]
            base = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=inner)
        else:
            raise ValueError(f"BertConfig.from_name: unknown name {name!r}; choose one of {sorted(_PRESETS) + ['tiny']}")
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        """The config.json dict transformers' ``BertConfig`` reads (labels as ``id2label``/``label2id``)."""
        d = dataclasses.asdict(self)
        del d["num_labels"]  # transformers derives it from id2label
        names = self.id2label or {i: f"LABEL_{i}" for i in range(self.num_labels)}
        d["id2label"] = {str(i): str(v) for i, v in sorted(names.items())}
        d["label2id"] = {str(v): int(i) for i, v in sorted(names.items())}
        d.update(model_type="bert", position_embedding_type="absolute", is_decoder=False, add_cross_attention=False)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BertConfig":
        """Read a transformers config dict: unknown keys are ignored, features this model lacks are errors."""
        if d.get("model_type", "bert") != "bert":
            raise ValueError(f"BertConfig.from_dict: model_type is {d['model_type']!r}, not 'bert'; load it with its own class")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"BertConfig.from_dict: position_embedding_type={d['position_embedding_type']!r} is not "
                             f"supported (only 'absolute')")
        if d.get("is_decoder", False) or d.get("add_cross_attention", False):
            raise ValueError("BertConfig.from_dict: is_decoder/add_cross_attention (BERT as a decoder) is not supported")
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if d.get("id2label"):
            labels = {int(k): v for k, v in d["id2label"].items()}
            kw["num_labels"] = len(labels)
            default = all(v == f"LABEL_{i}" for i, v in labels.items())
            kw["id2label"] = None if default else labels
        return cls(**kw)


def activation(name: str, x: Tensor) -> Tensor:
    """Apply transformers' activation ``name`` (one of ``BertConfig``'s ``hidden_act`` values)."""
    if name not in _ACT_FNS:
        raise ValueError(f"unsupported activation {name!r}; use one of {_ACTIVATIONS}")
    return _ACT_FNS[name](x)


__all__ = ["BertConfig", "activation"]
