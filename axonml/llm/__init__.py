"""Language models trained end to end (layer 8): GPT-2, BERT, a LLaMA-style decoder,
byte-level BPE and WordPiece tokenizers, generation with a KV cache, and the reference
training loop. Weights move in and out of Hugging Face ``save_pretrained`` folders.

Example::

    from axonml.llm import GPT2Config, GPT2LMHeadModel
    model = GPT2LMHeadModel(GPT2Config.from_name("tiny"))
    out = model(ids, labels=ids)          # out.loss, out.logits
    model.generate(ids, max_new_tokens=20, do_sample=True, top_p=0.9)
"""

from ._tokenizer_base import BatchEncoding, PreTrainedTokenizer
from .bert import BertConfig, BertLayer, BertModel, BertPreTrainedModel
from .bert_heads import BertForMaskedLM, BertForSequenceClassification
from .bpe import GPT2Tokenizer, bytes_to_unicode, train_bpe
from .cache import KVCache
from .data import TokenBlockDataset, train_val_split
from .generation import GenerationConfig, generate
from .gpt2 import GPT2Block, GPT2Config, GPT2LMHeadModel, GPT2Model
from .llama import LlamaConfig, LlamaDecoderLayer, LlamaForCausalLM, LlamaModel
from .outputs import BaseModelOutput, CausalLMOutput, MaskedLMOutput, SequenceClassifierOutput
from .train import StepLog, TrainConfig, Trainer, get_cosine_schedule_with_warmup, wrap_model
from .wordpiece import BertTokenizer
