"""Layer 5: datasets, samplers and the data loader (``torch.utils.data``'s names).

Modules: ``dataset`` (Dataset, IterableDataset, TensorDataset, Subset, ConcatDataset,
random_split), ``sampler`` (Sequential/Random/SubsetRandom/WeightedRandom/Batch
samplers), ``distributed`` (DistributedSampler), ``collate`` (default_collate),
``dataloader`` (DataLoader) and ``_worker`` (the worker processes' side).
"""

from .collate import default_collate, default_convert
from .dataloader import DataLoader, WorkerInfo, get_worker_info
from .dataset import ChainDataset, ConcatDataset, Dataset, IterableDataset, StackDataset, Subset, TensorDataset, random_split
from .distributed import DistributedSampler, register_world_provider
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler, WeightedRandomSampler

__all__ = [
    "BatchSampler",
    "ChainDataset",
    "ConcatDataset",
    "DataLoader",
    "Dataset",
    "DistributedSampler",
    "IterableDataset",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "StackDataset",
    "Subset",
    "SubsetRandomSampler",
    "TensorDataset",
    "WeightedRandomSampler",
    "WorkerInfo",
    "default_collate",
    "default_convert",
    "get_worker_info",
    "random_split",
    "register_world_provider",
]
