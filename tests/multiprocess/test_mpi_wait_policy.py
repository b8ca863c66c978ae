"""The ``mpi`` backend's wait policy (:mod:`axonml.collectives.backends.mpi_support`): no MPI needed."""

from __future__ import annotations

import time

import pytest

from axonml.collectives.backends import mpi_support as ms


@pytest.mark.parametrize("env, cores, expected", [
    ({"MPI_LOCALNRANKS": "4"}, 2, True),
    ({"MPI_LOCALNRANKS": "2"}, 2, False),
    ({"OMPI_COMM_WORLD_LOCAL_SIZE": "3"}, 2, True),
    ({"MPI_LOCALNRANKS": "junk"}, 1, False),
    ({}, 1, False),
])
def test_oversubscribed_reads_the_launchers_local_rank_count(env, cores, expected):
    assert ms.oversubscribed(env, cores=cores) is expected


def test_oversubscribed_defaults_to_this_process_affinity(monkeypatch):
    monkeypatch.setenv("MPI_LOCALNRANKS", "100000")
    assert ms.oversubscribed() is True


@pytest.mark.parametrize("spin", [0.0, 1e-3])
def test_backoff_notices_the_deadline(monkeypatch, spin):
    monkeypatch.setattr(ms, "_SPIN", spin)
    backoff = ms.Backoff(time.monotonic() + 0.02)
    assert backoff.spin == spin and not backoff.expired()
    t0 = time.monotonic()
    while not backoff.expired():
        backoff.pause()
        assert time.monotonic() - t0 < 1.0, "the deadline check never fired"
    assert time.monotonic() - t0 >= 0.019
