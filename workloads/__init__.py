"""Synthetic workloads: a shop catalog and user traffic with learnable structure (no I/O)."""

__all__: list[str] = []
