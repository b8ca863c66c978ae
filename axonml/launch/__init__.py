"""``axonml-launch``: start a training script on one node or many (layer 9).

``axonml-launch --nodes 4 --nproc-per-node 8 --rdzv-endpoint host:29400 train.py`` (also
``python -m axonml.launch ...``) runs a :class:`~axonml.cluster.agent.NodeAgent` on this
node; see :mod:`axonml.launch.cli` for the options and :mod:`axonml.cluster.env` for the
environment every worker gets.
"""

from .cli import build_parser, config_from_args, main

__all__ = ["build_parser", "config_from_args", "main"]
