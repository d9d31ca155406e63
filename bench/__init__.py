"""Benchmarks of the recommend worker against a bare "ceiling" flow (``streamrec bench``).

Modules: :mod:`bench.ceiling` (the ceiling dataflow), :mod:`bench.workload` (events and
the answer key), :mod:`bench.throughput`, :mod:`bench.latency` (+ :mod:`bench.consumer`,
the separate reading process), :mod:`bench.memory`, :mod:`bench.recovery`,
:mod:`bench.profile` (py-spy), :mod:`bench.report`, and :mod:`bench.harness`, which runs
them all. Nothing is imported here: ``python -m bytewax.run bench.ceiling`` should load
the ceiling flow and nothing else.
"""

__all__ = ["PHASES"]

#: Phases of ``streamrec bench``, each skippable with ``--skip``.
PHASES = ("taobao", "generated", "ceiling", "scaling", "recovery", "latency", "memory")
