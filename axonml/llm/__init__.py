"""Language models trained end to end (layer 8): GPT-2, BERT, a LLaMA-style decoder,
byte-level BPE and WordPiece tokenizers, generation with a KV cache, and the reference
training loop. Weights move in and out of Hugging Face ``save_pretrained`` folders."""

from .cache import KVCache
