#!/usr/bin/env bash
# Multi-node jobs with axonml-launch: the command to run on each node, and a rehearsal of
# the same job on one machine.
#
# On every node of the cluster (node 0 serves the rendezvous and the workers' store on
# MASTER:PORT; every node must reach it):
#
#   export MASTER=node0.example.com            # a name or address every node reaches
#   export JOB_ID=gpt-run-7                    # one id per job, the same on every node
#   export TOKEN_FILE=~/.axonml/gpt-run-7.token   # the same secret on every node (chmod 600)
#   launch/multinode.sh node 4 8 "$NODE_RANK" train.py --epochs 3
#
# which runs
#
#   axonml-launch --nodes 4 --nproc-per-node 8 --node-rank $NODE_RANK \
#       --rdzv-endpoint $MASTER:29400 --rdzv-id $JOB_ID --rdzv-token-file $TOKEN_FILE \
#       --max-restarts 3 train.py --epochs 3
#
# Elastic jobs: NODES=2:4 launch/multinode.sh node ... runs with any node count from 2 to 4
# (give no node rank: "-"); a lost node restarts the job at the smaller size, a new node
# is admitted at the next generation. Under Slurm the node rank is $SLURM_NODEID; in a
# Kubernetes indexed Job it is $JOB_COMPLETION_INDEX.
#
# Rehearse on this machine (N agents on loopback, a fresh token, a free port):
#
#   launch/multinode.sh local 4 2 examples/train_resume.py --steps 20 --ckpt-dir /tmp/ckpt
#
# Knobs (environment): NODES (default: the node count), PORT (29400; "local" picks a free
# one), MAX_RESTARTS (3), JOIN_TIMEOUT (600 s), LAUNCH (the axonml-launch command).
set -euo pipefail

usage() {
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

[ $# -ge 3 ] || usage
mode="$1"
nnodes="$2"
nproc="$3"
shift 3
PYTHON="${PYTHON:-python}"
if [ -z "${LAUNCH:-}" ]; then
    LAUNCH="$(dirname "$(command -v "$PYTHON")")/axonml-launch"
    [ -x "$LAUNCH" ] || LAUNCH="$(command -v axonml-launch || echo "$PYTHON -m axonml.launch")"
fi
NODES="${NODES:-$nnodes}"
MAX_RESTARTS="${MAX_RESTARTS:-3}"
JOIN_TIMEOUT="${JOIN_TIMEOUT:-600}"

case "$mode" in
node)
    [ $# -ge 2 ] || usage
    node_rank="$1"
    shift
    : "${MASTER:?set MASTER to the host of node 0}" "${JOB_ID:?set JOB_ID}" "${TOKEN_FILE:?set TOKEN_FILE}"
    rank_args=()
    [ "$node_rank" = "-" ] || rank_args=(--node-rank "$node_rank")
    exec $LAUNCH --nodes "$NODES" --nproc-per-node "$nproc" "${rank_args[@]}" \
        --rdzv-endpoint "$MASTER:${PORT:-29400}" --rdzv-id "$JOB_ID" --rdzv-token-file "$TOKEN_FILE" \
        --rdzv-conf "join_timeout=$JOIN_TIMEOUT" --max-restarts "$MAX_RESTARTS" "$@"
    ;;
local)
    [ $# -ge 1 ] || usage
    workdir="$(mktemp -d "${TMPDIR:-/tmp}/axonml-multinode.XXXXXX")"
    trap 'rm -rf "$workdir"' EXIT
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$workdir/token")
    port="${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
    pids=()
    for ((i = 0; i < nnodes; i++)); do
        # node 0 serves the rendezvous; the others are given no rank and get one from it
        rank_args=()
        [ "$i" -eq 0 ] && rank_args=(--node-rank 0)
        $LAUNCH --nodes "$NODES" --nproc-per-node "$nproc" "${rank_args[@]}" \
            --rdzv-endpoint "127.0.0.1:$port" --rdzv-id "local-$$" --rdzv-token-file "$workdir/token" \
            --rdzv-conf "join_timeout=$JOIN_TIMEOUT" --max-restarts "$MAX_RESTARTS" "$@" &
        pids+=($!)
        if [ "$i" -eq 0 ]; then  # let node 0 bind the port first
            for _ in $(seq 100); do
                "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
                sleep 0.05
            done
        fi
    done
    status=0
    for pid in "${pids[@]}"; do
        wait "$pid" || status=$?
    done
    exit "$status"
    ;;
*)
    usage
    ;;
esac
