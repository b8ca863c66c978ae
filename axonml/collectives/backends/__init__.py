"""Collective backends. ``tcp`` (built in, CPU) and ``threaded`` (ranks are threads, for tests)
register themselves when imported; optional backends (``mpi``, ``nccl``) do the same."""
