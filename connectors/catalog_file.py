"""A catalog JSONL file as a bounded input (read once at start)."""

from __future__ import annotations

from pathlib import Path

import bytewax.operators as op
from bytewax.connectors.files import FileSource
from bytewax.dataflow import Dataflow, Stream

from operators.messages import Envelope
from streamrec.errors import ConfigError

__all__ = ["catalog_file_envelopes"]


def catalog_file_envelopes(step_id: str, flow: Dataflow, path: str) -> Stream:
    if not Path(path).is_file():
        msg = f"STREAMREC_CATALOG_FILE={path!r} does not exist or is not a file"
        raise ConfigError(msg)
    lines = op.input(step_id, flow, FileSource(path))
    return op.map(f"{step_id}_envelope", lines, lambda line: Envelope(line, None, "items"))
