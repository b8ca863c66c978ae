"""The language models on a CUDA GPU (CuPy) equal themselves on the CPU: logits, loss, gradients
and generated tokens. Skipped without a GPU (CI has none); run on a lent GPU machine."""

import copy

import numpy as np
import pytest

import axonml as ax
from axonml.llm import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

pytestmark = pytest.mark.skipif(not ax.runtime.cuda_available(), reason="needs a CUDA GPU")


def _models():
    ax.manual_seed(0)
    yield "gpt2", GPT2LMHeadModel(GPT2Config.from_name("tiny"))
    yield "llama", LlamaForCausalLM(LlamaConfig.from_name("tiny"))
    yield "bert", BertForMaskedLM(BertConfig.from_name("tiny"))


@pytest.mark.parametrize("name,cpu", list(_models()), ids=lambda v: v if isinstance(v, str) else "")
def test_forward_and_backward_match_cpu(name, cpu):
    cpu.eval()
    gpu = copy.deepcopy(cpu).to("cuda")
    vocab = cpu.config.vocab_size
    ids = np.random.default_rng(1).integers(1, vocab, size=(2, 12)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[0, :3] = 0  # left padding for the decoders, padding keys for BERT alike
    outs = []
    for model, dev in ((cpu, "cpu"), (gpu, "cuda")):
        out = model(ax.tensor(ids, device=dev), attention_mask=ax.tensor(mask, device=dev), labels=ax.tensor(ids, device=dev))
        out.loss.backward()
        grads = {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}
        outs.append((out.logits.detach().numpy(), out.loss.item(), grads))
    (lc, sc, gc), (lg, sg, gg) = outs
    real = mask.astype(bool)
    np.testing.assert_allclose(lg[real], lc[real], rtol=1e-3, atol=1e-4)
    assert abs(sg - sc) <= 1e-4 * abs(sc)
    assert gc.keys() == gg.keys() and gc
    for n in gc:
        np.testing.assert_allclose(gg[n], gc[n], rtol=1e-3, atol=1e-5, err_msg=n)


@pytest.mark.parametrize("name,cpu", [m for m in _models() if m[0] != "bert"], ids=lambda v: v if isinstance(v, str) else "")
def test_cached_generation_on_gpu_equals_cpu(name, cpu):
    gpu = copy.deepcopy(cpu).to("cuda")
    prompt = [[5, 6, 7, 8], [9, 10]]
    a = cpu.generate(prompt, max_new_tokens=16, eos_token_id=[], pad_token_id=0).numpy()
    b = gpu.generate(prompt, max_new_tokens=16, eos_token_id=[], pad_token_id=0).numpy()
    c = gpu.generate(prompt, max_new_tokens=16, eos_token_id=[], pad_token_id=0, use_cache=False).numpy()
    np.testing.assert_array_equal(b, c)
    np.testing.assert_array_equal(a, b)
