"""The ``axonml-launch`` command line.

Usage::

    axonml-launch [--nodes N|MIN:MAX] [--nproc-per-node K] [--node-rank R]
                  [--rdzv-endpoint HOST:PORT] [--rdzv-id ID] [--rdzv-token-file F]
                  [--rdzv-conf KEY=VALUE,...] [--standalone] [--max-restarts M]
                  [--monitor-interval S] [--log-dir D] [--tee] [--metrics-port P]
                  [--backend tcp|mpi|nccl|auto] [--ray [--address ADDR]]
                  [-m | --no-python] script.py [script args]

Examples::

    axonml-launch --standalone --nproc-per-node 2 train.py --epochs 3
    # on each of 4 nodes (node 0 serves the rendezvous on its port 29400):
    axonml-launch --nodes 4 --nproc-per-node 8 --node-rank $NODE --rdzv-endpoint node0:29400 \\
        --rdzv-id job42 --rdzv-token-file ~/.axonml/job42.token --max-restarts 3 train.py

Without ``--rdzv-endpoint`` and with one node the launch is standalone (a private
rendezvous on a free loopback port, a fresh token). ``--rdzv-conf`` keys: ``join_timeout``
(600 s), ``last_call_timeout`` (1 s), ``heartbeat_timeout`` (30 s), ``heartbeat_interval``
(2 s), ``stop_timeout`` (5 s), ``close_timeout`` (10 s). Metrics: worker ``i`` serves
Prometheus metrics on ``--metrics-port + i``, the agent on ``--metrics-port +
--nproc-per-node`` (with ``/health``). The option names also accept torchrun's spelling
(``--nproc_per_node``, ``--nnodes``, ...).

``--backend mpi`` starts a node's workers as one ``mpiexec -n K`` job (the ``mpiexec`` next
to ``sys.executable``, else on ``PATH``), so the ``mpi`` backend bootstraps from MPI; one
node only: a multi-node MPI job needs one ``mpiexec -f hostfile`` for all nodes.

Note on start-up time: this module imports only the standard library and
:mod:`axonml.cluster` (gRPC), never NumPy or the tensor stack, and the agent never touches
a GPU.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import uuid
from typing import Sequence

from .._env import get_flag
from ..cluster import ray as _ray_mode
from ..cluster.agent import AgentConfig, NodeAgent, mpi_multinode_message
from ..cluster.mpi_workers import find_mpiexec
from ..cluster.rendezvous import parse_endpoint

__all__ = ["build_parser", "config_from_args", "main"]

logger = logging.getLogger(__name__)

_RDZV_CONF = {
    "join_timeout": "join_timeout",
    "last_call_timeout": "last_call_timeout",
    "heartbeat_timeout": "heartbeat_timeout",
    "heartbeat_interval": "heartbeat_interval",
    "stop_timeout": "stop_timeout",
    "close_timeout": "close_timeout",
}


def _nodes(text: str) -> tuple[int, int]:
    """``"4"`` -> (4, 4); ``"2:4"`` -> (2, 4)."""
    try:
        low, _, high = text.partition(":")
        lo = int(low)
        hi = int(high) if high else lo
    except ValueError:
        raise argparse.ArgumentTypeError(f"--nodes must be N or MIN:MAX (integers), got {text!r}") from None
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"--nodes needs 1 <= MIN <= MAX, got {text!r}")
    return lo, hi


def _rdzv_conf(text: str) -> dict[str, float]:
    conf: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in _RDZV_CONF:
            raise argparse.ArgumentTypeError(f"--rdzv-conf item {item!r}: use KEY=SECONDS with KEY one of {sorted(_RDZV_CONF)}")
        try:
            conf[_RDZV_CONF[key.strip()]] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--rdzv-conf {key.strip()}={value!r} is not a number of seconds") from None
    return conf


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``axonml-launch``."""
    p = argparse.ArgumentParser(
        prog="axonml-launch",
        description="Run a training script as a job of nodes x workers, with rendezvous, restarts and metrics.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Each worker gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR, MASTER_PORT, "
               "AXONML_RESTART_COUNT, AXONML_MAX_RESTARTS, AXONML_RUN_ID and OMP_NUM_THREADS.",
    )
    p.add_argument("--nodes", "--nnodes", type=_nodes, default=(1, 1), metavar="N|MIN:MAX",
                   help="number of nodes, or the elastic range MIN:MAX (default 1)")
    p.add_argument("--nproc-per-node", "--nproc_per_node", type=int, default=1, metavar="K", help="workers per node (default 1)")
    p.add_argument("--node-rank", "--node_rank", type=int, default=-1, metavar="R",
                   help="this node's rank (default: assigned by the rendezvous); node 0 serves the rendezvous")
    p.add_argument("--rdzv-endpoint", "--rdzv_endpoint", default="", metavar="HOST:PORT",
                   help="the rendezvous service (default port 29400)")
    p.add_argument("--rdzv-id", "--rdzv_id", default="", metavar="ID", help="the job id, the same on every node")
    p.add_argument("--rdzv-token-file", "--rdzv_token_file", default="", metavar="FILE",
                   help="file holding the job's shared token (default: $AXONML_STORE_TOKEN)")
    p.add_argument("--rdzv-conf", "--rdzv_conf", type=_rdzv_conf, default={}, metavar="KEY=VALUE,...",
                   help=f"rendezvous timing in seconds: {', '.join(sorted(_RDZV_CONF))}")
    p.add_argument("--standalone", action="store_true", help="one node, a private rendezvous on a free loopback port")
    p.add_argument("--max-restarts", "--max_restarts", type=int, default=0, metavar="M",
                   help="restart the job after a worker failure up to M times (default 0)")
    p.add_argument("--monitor-interval", "--monitor_interval", type=float, default=0.1, metavar="S",
                   help="seconds between checks of the workers (default 0.1)")
    p.add_argument("--log-dir", "--log_dir", default=None, metavar="D",
                   help="write each rank's stdout/stderr to D/<run id>/gen<G>/rank<N>.{stdout,stderr}.log")
    p.add_argument("--tee", action="store_true", help="with --log-dir, also print the workers' output")
    p.add_argument("--metrics-port", "--metrics_port", type=int, default=None, metavar="P",
                   help="Prometheus metrics: worker i on P+i, the agent on P+nproc-per-node")
    p.add_argument("--backend", choices=("tcp", "mpi", "nccl", "auto"), default="auto",
                   help="what init_process_group(backend='auto') picks in the workers (default auto); mpi: the "
                        "workers run as one `mpiexec -n K` job (one node)")
    p.add_argument("--ray", action="store_true", help="run the job on a Ray cluster instead of local agents")
    p.add_argument("--address", default=None, metavar="ADDR", help="with --ray: the Ray cluster to join (default: local)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("-m", "--module", action="store_true", help="run the script as a module (python -m)")
    how.add_argument("--no-python", "--no_python", action="store_true", help="run the script as a program, not with python")
    p.add_argument("script", help="the training script (or module, or program)")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    return p


def _read_token(path: str) -> str:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        raise ValueError(f"--rdzv-token-file {path!r} cannot be read: {e.strerror}") from None
    if not token:
        raise ValueError(f"--rdzv-token-file {path!r} is empty; put the job's shared token in it")
    return token


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """The :class:`AgentConfig` of parsed arguments.

    Raises:
        ValueError: the arguments do not make a valid job (the message names the option).
    """
    lo, hi = args.nodes
    standalone = args.standalone or (not args.rdzv_endpoint and hi == 1)
    if not standalone and not args.rdzv_endpoint:
        raise ValueError(f"--nodes {lo}:{hi} needs --rdzv-endpoint HOST:PORT (the agent of node 0 serves it), "
                         "or use --standalone for one node")
    if args.standalone and args.rdzv_endpoint:
        raise ValueError("--standalone serves a private rendezvous: do not also give --rdzv-endpoint")
    if args.backend == "mpi":
        if hi > 1:
            raise ValueError(mpi_multinode_message(lo, hi))
        find_mpiexec()  # FileNotFoundError naming `pip install mpi4py mpich`
    token = _read_token(args.rdzv_token_file) if args.rdzv_token_file else get_flag("AXONML_STORE_TOKEN")
    if standalone and not token:
        token = secrets.token_urlsafe(24)
    job_id = args.rdzv_id or (uuid.uuid4().hex[:12] if standalone else "none")
    host, port = parse_endpoint(args.rdzv_endpoint) if not standalone else ("127.0.0.1", 0)
    if args.module:
        cmd = (sys.executable, "-u", "-m", args.script, *args.script_args)
    elif args.no_python:
        cmd = (args.script, *args.script_args)
    else:
        if not os.path.isfile(args.script):
            raise ValueError(f"the script {args.script!r} does not exist (use -m to run a module)")
        cmd = (sys.executable, "-u", args.script, *args.script_args)
    return AgentConfig(
        cmd=cmd, nproc_per_node=args.nproc_per_node, min_nodes=lo, max_nodes=hi, node_rank=args.node_rank,
        rdzv_host=host, rdzv_port=port, job_id=job_id, token=token, standalone=standalone,
        max_restarts=args.max_restarts, monitor_interval=args.monitor_interval, log_dir=args.log_dir, tee=args.tee,
        metrics_port=args.metrics_port, backend=args.backend, **args.rdzv_conf,
    )


def _run_ray(args: argparse.Namespace) -> int:
    lo, hi = args.nodes
    if lo != hi:
        raise ValueError(f"--ray runs a fixed number of nodes; got --nodes {lo}:{hi}")
    return _ray_mode.launch_script(args.script, args.script_args, nodes=hi, nproc_per_node=args.nproc_per_node,
                                   address=args.address, max_restarts=args.max_restarts, backend=args.backend)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``axonml-launch`` with ``argv`` (default: the command line); returns the exit code:
    0, the failing worker's exit code (128 + N when killed by signal N), 128 + N when the
    launcher itself got signal N, 1 for a rendezvous failure, 2 for bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format="[axonml-launch %(levelname)s] %(message)s", level=get_flag("AXONML_LOG_LEVEL").upper())
    try:
        if args.ray:
            return _run_ray(args)
        config = config_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        parser.print_usage(sys.stderr)
        print(f"axonml-launch: error: {e}", file=sys.stderr)
        return 2
    return NodeAgent(config).run()
