#!/usr/bin/env bash
# Run an unchanged AxonML training script under MPI on the hosts of a hostfile:
#
#   launch/mpi_run.sh train.py --epochs 3                 # 8 ranks on launch/mpi_hostfile
#   NP=4 HOSTFILE=my_hosts launch/mpi_run.sh train.py
#
# init_process_group() reads rank and size from MPI's environment (PMI_RANK/PMI_SIZE,
# OMPI_COMM_WORLD_RANK/SIZE). backend="auto" picks the `mpi` backend; backend="tcp" gets its
# store address from rank 0 over MPI. AXONML_BACKEND=tcp makes "auto" pick tcp.
# Use the mpiexec of the MPI that mpi4py was built with (after `pip install mpi4py mpich`
# that is .venv/bin/mpiexec): another MPI's mpiexec gives N worlds of one, which AxonML
# reports as an error.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HOSTFILE="${HOSTFILE:-$HERE/mpi_hostfile}"
NP="${NP:-8}"
PYTHON="${PYTHON:-python}"
MPIEXEC="${MPIEXEC:-$(dirname "$(command -v "$PYTHON")")/mpiexec}"
[ -x "$MPIEXEC" ] || MPIEXEC="$(command -v mpiexec)"
exec "$MPIEXEC" -f "$HOSTFILE" -n "$NP" \
    -genv OMP_NUM_THREADS "${OMP_NUM_THREADS:-1}" \
    -genv AXONML_BACKEND "${AXONML_BACKEND:-auto}" \
    "$PYTHON" "$@"
