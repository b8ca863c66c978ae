"""Tokenizers against the oracle: transformers' GPT2Tokenizer / BertTokenizer (and the ``tokenizers``
library) reading the very files our tokenizers write, compared id for id."""

import json
import os
import random
import unicodedata
from collections import Counter

import numpy as np
import pytest

import axonml as ax
from axonml.errors import CheckpointError
from axonml.llm.bpe import BYTE_ENCODER, GPT2_PATTERN, GPT2Tokenizer, train_bpe
from axonml.llm.wordpiece import BertTokenizer

transformers = pytest.importorskip("transformers")
hf_tokenizers = pytest.importorskip("tokenizers")

CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "data", "kjv_pentateuch.txt")
EOT = "<|endoftext|>"

TRICKY = [
    "",
    " ",
    "  a\n\n b\t",
    "a  b   c    ",
    " \n ",
    "\r\n\r\nx\r\n",
    "trailing space ",
    "\t\tindent",
    "I'm you're he's we've they'll she'd it't",
    "I'M YOU'RE HE'S",
    "don't 'quoted' ''",
    "1 12 123 1234567890 3.14159 1,000,000 ٣٤٥",
    "...!!!???;;;--__==++",
    "(a)[b]{c}<d> @#$%^&*",
    "café naïve résumé Ærø ÅNGSTRÖM",
    "e\u0301 a\u0308 n\u0303 \u0301lone",
    "中文字符 日本語のテキスト 한국어",
    "👍🏽 😀😀 👨‍👩‍👧 🇫🇷",
    "Ελληνικά ΟΔΟΣ σς",
    "Привет, мир!",
    "مرحبا بالعالم",
    "\u200b\u200d\ufeff zero width",
    "And God said, Let there be light: and there was light.",
]


def _stable_random_text(rng: random.Random, n: int) -> str:
    """Seeded random text of code points assigned since Unicode 3.2 with unchanged category, so the
    Unicode tables of Python, `regex` and the Rust libraries all agree on them."""
    out = []
    while len(out) < n:
        r = rng.random()
        if r < 0.3:
            cp = rng.randrange(32, 127)
        elif r < 0.4:
            out.append(rng.choice(" \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000\u200b\x00\ufffd"))
            continue
        else:
            cp = rng.randrange(0x80, 0x30000)
        ch = chr(cp)
        if 0xD800 <= cp < 0xE000 or unicodedata.category(ch) == "Cn":
            continue
        if unicodedata.ucd_3_2_0.category(ch) == unicodedata.category(ch):
            out.append(ch)
    return "".join(out)


def _any_random_text(rng: random.Random, n: int) -> str:
    """Any code points but surrogates (unassigned and private-use included)."""
    cps = []
    while len(cps) < n:
        cp = rng.randrange(0, 0x110000) if rng.random() < 0.7 else rng.randrange(0, 0x800)
        if not 0xD800 <= cp < 0xE000:
            cps.append(cp)
    return "".join(map(chr, cps))


@pytest.fixture(scope="module")
def corpus_lines():
    with open(CORPUS, encoding="ascii") as f:
        return f.read().splitlines(keepends=True)


@pytest.fixture(scope="module")
def bpe_dir(corpus_lines, tmp_path_factory):
    tok = train_bpe(corpus_lines, vocab_size=1000)
    d = tmp_path_factory.mktemp("bpe")
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def gpt2_pair(bpe_dir):
    return GPT2Tokenizer.from_pretrained(bpe_dir), transformers.GPT2Tokenizer.from_pretrained(bpe_dir)


# ------------------------------------------------------------------------------------- GPT-2 BPE
def test_trained_bpe_matches_transformers_on_the_whole_corpus(corpus_lines, gpt2_pair):
    ours, hf = gpt2_pair
    assert len(ours) == len(hf) == ours.vocab_size == 1000
    assert ours.get_vocab() == hf.get_vocab()
    text = "".join(corpus_lines)
    ids = ours.encode(text)
    assert ids == hf.encode(text)
    assert ours.decode(ids) == text
    assert ours.encode_batch(corpus_lines[:200]) == [hf.encode(s) for s in corpus_lines[:200]]
    assert len(ids) < len(text) / 3  # the learned merges compress the text they were trained on


@pytest.mark.parametrize("text", TRICKY)
def test_bpe_tricky_strings_match_transformers(gpt2_pair, text):
    ours, hf = gpt2_pair
    ids = ours.encode(text)
    assert ids == hf.encode(text)
    assert ours.tokenize(text) == hf.tokenize(text)
    assert ours.decode(ids) == hf.decode(ids) == text


def test_bpe_random_unicode_matches_and_round_trips(gpt2_pair):
    ours, hf = gpt2_pair
    rng = random.Random(1234)
    for _ in range(300):
        text = _stable_random_text(rng, rng.randrange(1, 40))
        assert ours.encode(text) == hf.encode(text), repr(text)
    for _ in range(300):  # byte-level: any string survives encode -> decode
        text = _any_random_text(rng, rng.randrange(1, 40))
        assert ours.decode(ours.encode(text)) == text, repr(text)


def test_bpe_special_tokens_inside_text(gpt2_pair):
    ours, hf = gpt2_pair
    eot = ours.eos_token_id
    assert eot == ours.convert_tokens_to_ids(EOT) == hf.eos_token_id == 999
    for text in [f"hello{EOT} world", f"{EOT}{EOT}x", f"a <|endoftext| > {EOT}", f" {EOT}\n"]:
        ids = ours.encode(text)
        assert ids == hf.encode(text)
        assert ids.count(eot) == text.count(EOT)
        assert ours.decode(ids) == hf.decode(ids) == text
        assert ours.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True)
    # a partial UTF-8 sequence before a special token decodes with a replacement character
    ids = [ours.convert_tokens_to_ids("â"), eot]
    assert ours.decode(ids) == hf.decode(ids) == "\ufffd" + EOT
    assert ours.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)


def test_bpe_add_prefix_space_and_added_tokens_match(bpe_dir):
    ours = GPT2Tokenizer.from_pretrained(bpe_dir, add_prefix_space=True)
    hf = transformers.GPT2Tokenizer.from_pretrained(bpe_dir, add_prefix_space=True)
    assert ours.add_tokens(["<ü€>", "<sep>"]) == hf.add_tokens(["<ü€>", "<sep>"]) == 2
    for text in ["hi", " hi", "\nhi", f"hello{EOT}world", f"{EOT} x", "a<ü€>b <sep>c"]:
        ids = ours.encode(text)
        assert ids == hf.encode(text), text
        assert ours.decode(ids) == hf.decode(ids)
    assert len(ours) == len(hf) == 1002


def test_bpe_batch_padding_and_truncation_match_transformers(gpt2_pair):
    ours, hf = gpt2_pair
    ours.pad_token, hf.pad_token = EOT, EOT
    texts = ["In the beginning", "God", "And the earth was without form, and void;"]
    for side in ("right", "left"):
        for kwargs in ({"padding": True}, {"padding": "max_length", "max_length": 16}, {"padding": True, "pad_to_multiple_of": 8},
                       {"padding": True, "truncation": True, "max_length": 5}):  # fmt: skip
            a = ours(texts, padding_side=side, return_tensors="np", **kwargs)
            b = hf(texts, padding_side=side, return_tensors="np", **kwargs)
            assert set(a) == {"input_ids", "attention_mask"}
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
                assert a[key].dtype == np.int64
    enc = ours(texts, padding=True, padding_side="left", return_tensors="ax")
    assert isinstance(enc.input_ids, ax.Tensor) and enc.input_ids.dtype == ax.int64
    np.testing.assert_array_equal(
        enc.attention_mask.numpy(), hf(texts, padding=True, padding_side="left", return_tensors="np")["attention_mask"]
    )
    assert ours(texts) == {k: v for k, v in hf(texts).items()}
    assert ours(texts[0]) == {k: v for k, v in hf(texts[0]).items()}
    np.testing.assert_array_equal(
        ours(texts[0], return_tensors="np")["input_ids"], hf(texts[0], return_tensors="np")["input_ids"]
    )
    assert ours.batch_decode(enc.input_ids, skip_special_tokens=True) == texts
    assert ours.decode(enc.input_ids[1]) == hf.decode(enc.input_ids.numpy()[1])


def test_bpe_batching_errors(bpe_dir):
    tok = GPT2Tokenizer.from_pretrained(bpe_dir)
    assert tok.pad_token is None
    with pytest.raises(ValueError, match="no pad_token"):
        tok(["a", "bb cc"], padding=True)
    with pytest.raises(ValueError, match="lengths"):
        tok(["a", "bb cc dd"], return_tensors="np")
    with pytest.raises(ValueError, match="'ax'"):
        tok(["a"], return_tensors="pt")
    with pytest.raises(ValueError, match="padding_side"):
        tok(["a"], padding_side="middle")
    with pytest.raises(TypeError, match="str"):
        tok([1, 2])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.decode([5000])


def test_save_pretrained_round_trip_into_transformers(gpt2_pair, tmp_path):
    ours, _ = gpt2_pair
    tok = GPT2Tokenizer(vocab=ours.get_vocab(), merges=ours.merges, pad_token="<pad>", add_prefix_space=True)
    assert tok.pad_token_id == len(tok) - 1 == 1000  # a new token gets the next id
    files = tok.save_pretrained(tmp_path)
    assert sorted(os.path.basename(f) for f in files) == ["merges.txt", "tokenizer_config.json", "vocab.json"]
    hf = transformers.GPT2Tokenizer.from_pretrained(tmp_path)
    again = GPT2Tokenizer.from_pretrained(tmp_path)
    assert hf.pad_token == again.pad_token == "<pad>" and hf.pad_token_id == again.pad_token_id == 1000
    assert again.add_prefix_space and again.merges == tok.merges and again.get_vocab() == tok.get_vocab()
    for text in ["Let there be light", f"x<pad>y{EOT}", TRICKY[2]]:
        assert tok.encode(text) == again.encode(text) == hf.encode(text)


def _hf_bpe_tokenizer(ours, pattern=None):
    model = hf_tokenizers.models.BPE(vocab=ours.get_vocab(), merges=ours.merges)
    tk = hf_tokenizers.Tokenizer(model)
    bl = hf_tokenizers.pre_tokenizers
    if pattern is None:
        tk.pre_tokenizer = bl.ByteLevel(add_prefix_space=False)
    else:
        split = bl.Split(hf_tokenizers.Regex(pattern), behavior="isolated")
        tk.pre_tokenizer = bl.Sequence([split, bl.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = hf_tokenizers.decoders.ByteLevel()
    tk.add_special_tokens([EOT, "<|im_start|>"])
    return tk


@pytest.mark.parametrize("merges_as", ["pairs", "strings"])
def test_tokenizer_json_matches_the_tokenizers_library(gpt2_pair, tmp_path, merges_as):
    ours, _ = gpt2_pair
    tk = _hf_bpe_tokenizer(ours)
    path = tmp_path / "tokenizer.json"
    tk.save(str(path))
    data = json.loads(path.read_text())
    data["model"]["merges"] = [m if isinstance(m, list) else m.split(" ") for m in data["model"]["merges"]]
    if merges_as == "strings":
        data["model"]["merges"] = [" ".join(m) for m in data["model"]["merges"]]
    path.write_text(json.dumps(data))
    loaded = GPT2Tokenizer.from_pretrained(tmp_path)  # no vocab.json: tokenizer.json is read
    assert loaded.get_vocab() == tk.get_vocab() and loaded.convert_tokens_to_ids("<|im_start|>") == 1000
    rng = random.Random(7)
    texts = TRICKY + [f"<|im_start|>user{EOT}"] + [_stable_random_text(rng, 30) for _ in range(50)]
    for text in texts:
        ids = loaded.encode(text)
        assert ids == tk.encode(text).ids, repr(text)
        assert loaded.decode(ids) == tk.decode(ids, skip_special_tokens=False)


def test_tokenizer_json_with_a_split_regex_pre_tokenizer(gpt2_pair, tmp_path):
    ours, _ = gpt2_pair
    pattern = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    tk = _hf_bpe_tokenizer(ours, pattern)
    tk.save(str(tmp_path / "tokenizer.json"))
    loaded = GPT2Tokenizer.from_tokenizer_json(tmp_path / "tokenizer.json")
    assert loaded.pattern == pattern
    rng = random.Random(8)
    for text in TRICKY + ["1234567 I'LL", "x\r\n\r\n  y"] + [_stable_random_text(rng, 30) for _ in range(50)]:
        assert loaded.encode(text) == tk.encode(text).ids, repr(text)


def test_tokenizers_pickle(gpt2_pair, bert_dir):
    import pickle

    ours, _ = gpt2_pair
    split = GPT2Tokenizer(vocab=ours.get_vocab(), merges=ours.merges, pattern=r"\p{L}+|\p{N}")
    for tok in (ours, split, BertTokenizer.from_pretrained(bert_dir)):
        clone = pickle.loads(pickle.dumps(tok))
        for text in TRICKY[:12]:
            assert clone.encode(text) == tok.encode(text)


def test_gpt2_file_errors(gpt2_pair, tmp_path):
    ours, _ = gpt2_pair
    ours.save_pretrained(tmp_path)
    vocab, merges = tmp_path / "vocab.json", tmp_path / "merges.txt"
    with pytest.raises(CheckpointError, match="does not exist"):
        GPT2Tokenizer(tmp_path / "nope.json", merges)
    with pytest.raises(CheckpointError, match="is not a directory"):
        GPT2Tokenizer.from_pretrained(tmp_path / "missing_dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither vocab.json"):
        GPT2Tokenizer.from_pretrained(tmp_path / "empty")
    bad = tmp_path / "bad_merges.txt"
    bad.write_text("#version: 0.2\nĠ t\nthree parts here\n")
    with pytest.raises(CheckpointError, match=r"merge 2 is 'three parts here'"):
        GPT2Tokenizer(vocab, bad)
    bad.write_text("Ġ zzzz\n")
    with pytest.raises(CheckpointError, match="lacks"):
        GPT2Tokenizer(vocab, bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        GPT2Tokenizer(broken, merges)
    wp = tmp_path / "wp.json"
    wp.write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0}}}))
    with pytest.raises(CheckpointError, match="byte-level BPE"):
        GPT2Tokenizer.from_tokenizer_json(wp)
    with pytest.raises(ValueError, match="exactly one"):
        GPT2Tokenizer(vocab, merges, vocab={"a": 0})


# ------------------------------------------------------------------------------------- training
def _naive_merges(texts, target, min_frequency):
    """Reference trainer: recount every pair from scratch after each merge."""
    import regex

    words = Counter()
    for t in texts:
        words.update(tuple(BYTE_ENCODER[b] for b in w.encode("utf-8")) for w in regex.findall(GPT2_PATTERN, t))
    symbols, merges, done = set(BYTE_ENCODER.values()), [], set()
    while len(symbols) < target:
        pairs = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_frequency:
            break
        if best not in done:
            done.add(best)
            merges.append(best)
        symbols.add(best[0] + best[1])
        merged = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += c
        words = merged
    return merges


def test_training_equals_the_naive_reference_and_is_deterministic(corpus_lines):
    texts = corpus_lines[:250] + ["ééé ééé 中中中 中中中 👍👍 👍👍\n"]
    tok = train_bpe(texts, vocab_size=256 + 150 + 1)
    assert tok.merges == _naive_merges(texts, 256 + 150, min_frequency=2)
    again = train_bpe(list(reversed(texts)), vocab_size=256 + 150 + 1)
    assert again.merges == tok.merges and again.get_vocab() == tok.get_vocab()
    assert len(tok) == 256 + 150 + 1 and tok.eos_token_id == 406
    for text in texts[:50] + TRICKY:
        assert tok.decode(tok.encode(text)) == text


def test_training_min_frequency_special_tokens_and_errors(corpus_lines):
    texts = corpus_lines[:100]
    few = train_bpe(texts, vocab_size=5000, min_frequency=50, special_tokens=("<s>", "</s>"))
    assert 256 + 2 < len(few) < 5000  # stopped early: no pair left with 50 occurrences
    assert few.convert_ids_to_tokens([len(few) - 2, len(few) - 1]) == ["<s>", "</s>"]
    ids = few.encode("<s>In the beginning</s>")
    assert ids[0] == few.bos_token_id == few.unk_token_id and ids[-1] == len(few) - 1
    with_special = train_bpe([f"ab{EOT}ab{EOT}ab"] * 5, vocab_size=260)
    assert all(EOT not in t and "|" not in t[1:] for t, _ in with_special.merges)  # never learned from
    with pytest.raises(ValueError, match="below the 256 byte symbols"):
        train_bpe(texts, vocab_size=200)
    with pytest.raises(ValueError, match="min_frequency"):
        train_bpe(texts, vocab_size=300, min_frequency=0)
    with pytest.raises(TypeError, match="must yield str"):
        train_bpe([b"bytes"], vocab_size=300)


# ------------------------------------------------------------------------------------- BERT WordPiece
@pytest.fixture(scope="module")
def bert_dir(corpus_lines, tmp_path_factory):
    words = Counter(w for line in corpus_lines for w in line.lower().split())
    chars = sorted({c for w in words for c in w} | set("éñüσςπ中文日本語"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    vocab += [w.strip(".,;:?!'") for w, _ in words.most_common(500)]
    vocab += ["##ed", "##ing", "##eth", "##est", "##s", "cafe", "naive", "resume", "god", "light", "π", "##ει"]
    vocab = [t for t in dict.fromkeys(vocab) if t]
    d = tmp_path_factory.mktemp("bert")
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def bert_pair(bert_dir, request):
    lower = request.param
    return BertTokenizer.from_pretrained(bert_dir, do_lower_case=lower), transformers.BertTokenizer.from_pretrained(
        bert_dir, do_lower_case=lower
    )


def test_bert_matches_transformers_on_corpus_tricky_and_random_text(corpus_lines, bert_pair):
    ours, hf = bert_pair
    assert len(ours) == len(hf) and ours.get_vocab() == hf.get_vocab()
    rng = random.Random(99)
    texts = corpus_lines[::20] + TRICKY + ["Hello [MASK] world [SEP] [CLS]x", "x" * 100, "y" * 101, "über" * 30]
    texts += [_stable_random_text(rng, rng.randrange(1, 40)) for _ in range(300)]
    for text in texts:
        ids = ours.encode(text)
        assert ids == hf.encode(text), repr(text)
        assert ours.tokenize(text) == hf.tokenize(text)
        assert ours.decode(ids) == hf.decode(ids), repr(text)
        assert ours.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True)
    assert ours.tokenize("x" * 101) == ["[UNK]"]


def test_bert_options_match_transformers(bert_dir):
    for kwargs in ({"strip_accents": False}, {"do_lower_case": False, "strip_accents": True}, {"tokenize_chinese_chars": False}):
        ours, hf = (
            BertTokenizer.from_pretrained(bert_dir, **kwargs),
            transformers.BertTokenizer.from_pretrained(bert_dir, **kwargs),
        )
        for text in TRICKY + ["Café RÉSUMÉ naïve", "中文 日本語"]:
            assert ours.encode(text) == hf.encode(text), (kwargs, text)


def test_bert_pairs_batches_and_truncation_match_transformers(bert_pair):
    ours, hf = bert_pair
    a = ["and god said let there be light and there was light", "In the beginning", "x"]
    b = ["the earth was without form", "God created the heaven and the earth. And it was so.", "y z"]
    assert ours.encode(a[0], b[0]) == hf.encode(a[0], b[0])
    for side in ("right", "left"):
        for kwargs in ({"padding": True}, {"padding": "max_length", "max_length": 40}):
            x = ours(a, b, padding_side=side, return_tensors="np", **kwargs)
            y = hf(a, b, padding_side=side, return_tensors="np", **kwargs)
            assert list(x) == ["input_ids", "token_type_ids", "attention_mask"]
            for key in x:
                np.testing.assert_array_equal(x[key], y[key])
    for max_length in (5, 6, 8, 9, 11, 14, 20, 40):
        for i in range(3):
            got = ours(a[i], b[i], truncation=True, max_length=max_length)
            assert got == {k: v for k, v in hf(a[i], b[i], truncation=True, max_length=max_length).items()}, (max_length, i)
        x = ours(a, truncation=True, max_length=max_length)
        assert x == {k: v for k, v in hf(a, truncation=True, max_length=max_length).items()}
    for strategy in ("only_first", "only_second"):
        for max_length in (11, 14, 20, 40):
            try:
                want = hf(a[1], b[1], truncation=strategy, max_length=max_length)["input_ids"]
            except Exception:
                with pytest.raises(ValueError, match="cannot fit"):
                    ours(a[1], b[1], truncation=strategy, max_length=max_length)
            else:
                assert ours(a[1], b[1], truncation=strategy, max_length=max_length)["input_ids"] == want
    for max_length in (2, 3):  # single texts may be cut to nothing but [CLS] [SEP]
        assert ours(a, truncation=True, max_length=max_length) == dict(hf(a, truncation=True, max_length=max_length))
    with pytest.raises(ValueError, match="leaves no room"):
        ours(a[0], b[0], truncation=True, max_length=2)
    ours.truncation_side = hf.truncation_side = "left"
    try:
        for max_length in (4, 9, 13):
            got = ours(a, b, truncation=True, max_length=max_length)
            assert got == dict(hf(a, b, truncation=True, max_length=max_length))
    finally:
        ours.truncation_side = hf.truncation_side = "right"
    rows = [ours(t) for t in a]
    for side in ("left", "right"):
        x = ours.pad(rows, padding_side=side, return_tensors="np")
        y = hf.pad([dict(r) for r in rows], padding_side=side, return_tensors="np")
        assert set(x) == set(y)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert ours.pad(rows[0], padding="max_length", max_length=12) == dict(
        hf.pad(dict(rows[0]), padding="max_length", max_length=12)
    )
    enc = ours(a, padding=True, return_tensors="ax")
    assert enc.token_type_ids.shape == enc.input_ids.shape and enc.input_ids.dtype == ax.int64


def test_bert_save_pretrained_round_trip_into_transformers(bert_dir, tmp_path):
    tok = BertTokenizer.from_pretrained(bert_dir, do_lower_case=False, additional_special_tokens=["[E1]"])
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8") == (bert_dir / "vocab.txt").read_text(encoding="utf-8")
    hf = transformers.BertTokenizer.from_pretrained(tmp_path)
    again = BertTokenizer.from_pretrained(tmp_path)
    assert not again.do_lower_case and again.additional_special_tokens == ["[E1]"]
    assert hf.convert_tokens_to_ids("[E1]") == again.convert_tokens_to_ids("[E1]") == len(tok) - 1
    for text in ["In the Beginning [E1] God", "Café", TRICKY[2]]:
        assert tok.encode(text) == again.encode(text) == hf.encode(text)


def test_bert_errors(bert_dir, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        BertTokenizer(tmp_path / "vocab.txt")
    with pytest.raises(CheckpointError, match="neither vocab.txt nor tokenizer.json"):
        BertTokenizer.from_pretrained(tmp_path)
    tok = BertTokenizer.from_pretrained(bert_dir)
    with pytest.raises(ValueError, match="exactly one"):
        BertTokenizer()
    with pytest.raises(TypeError, match="1-D"):
        tok.decode([[1, 2], [3, 4]])
    assert tok.decode(np.array(tok.encode("god"))) == "[CLS] god [SEP]"
    with pytest.raises(ValueError, match="no pad_token"):
        BertTokenizer.from_pretrained(bert_dir, pad_token=None)(["a", "a b"], padding=True)


def test_folders_saved_by_transformers_load_with_the_same_ids(bpe_dir, bert_dir, tmp_path):
    """transformers 5 saves tokenizer.json (no vocab files): both tokenizers read it."""
    rng = random.Random(5)
    texts = TRICKY + [f"x{EOT}y [MASK] z"] + [_stable_random_text(rng, 30) for _ in range(40)]
    for ours_cls, hf_cls, src, kwargs in [
        (GPT2Tokenizer, transformers.GPT2Tokenizer, bpe_dir, {"pad_token": "<pad>"}),
        (BertTokenizer, transformers.BertTokenizer, bert_dir, {"do_lower_case": False, "tokenize_chinese_chars": False}),
    ]:
        hf = hf_cls.from_pretrained(src, **kwargs)
        out = tmp_path / ours_cls.__name__
        hf.save_pretrained(out)
        assert not (out / "vocab.json").exists() and not (out / "vocab.txt").exists() and (out / "tokenizer.json").exists()
        ours = ours_cls.from_pretrained(out)
        assert ours.get_vocab() == hf.get_vocab() and ours.all_special_tokens == hf.all_special_tokens
        assert ours.pad_token_id == hf.pad_token_id
        for text in texts:
            ids = ours.encode(text)
            assert ids == hf.encode(text), (ours_cls.__name__, text)
            assert ours.decode(ids) == hf.decode(ids)
    with pytest.raises(CheckpointError, match="WordPiece models only"):
        BertTokenizer.from_tokenizer_json(tmp_path / "GPT2Tokenizer" / "tokenizer.json")
