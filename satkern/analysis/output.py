"""The analysis job's output files (``heads.csv``, ``prm.npz``, ``utterances.parquet``), each written
atomically (:mod:`satkern.jobs.files`, re-exported here for the analysis modules)."""
from __future__ import annotations

import io
from typing import List, Optional, Sequence

import numpy as np

from ..jobs.files import atomic_write_bytes, atomic_write_text
from .accumulate import METRICS

# one row per utterance and head; ``frames``: the model frames T the metrics are computed over
UTTERANCE_COLUMNS = ["utterance", "duration", "frames", "layer", "head", *METRICS]

__all__ = ["UTTERANCE_COLUMNS", "atomic_write_bytes", "atomic_write_text", "write_heads_csv", "write_prm", "write_utterances"]


def write_heads_csv(path, heads: dict, categories: Optional[Sequence[str]]) -> None:
    """``layer, head, G, V, D, W, category, n_utterances``; one row per head, layer-major."""
    import pandas as pd

    n = heads["n_utterances"]
    L, H = n.shape
    cols = {"layer": np.repeat(np.arange(L), H), "head": np.tile(np.arange(H), L)}
    for k in METRICS:
        cols[k] = heads[k].reshape(-1) if heads[k] is not None else np.full(L * H, np.nan)
    cols["category"] = list(categories) if categories is not None else [""] * (L * H)
    cols["n_utterances"] = n.reshape(-1)
    buf = io.StringIO()
    pd.DataFrame(cols).to_csv(buf, index=False, float_format="%.17g")
    atomic_write_text(path, buf.getvalue())


def write_prm(path, acc, labels: List[str]) -> None:
    r = acc.prm()
    buf = io.BytesIO()
    np.savez(buf, **r, labels=np.array(labels, dtype=str))
    atomic_write_bytes(path, buf.getvalue())


def write_utterances(path, rows: Optional[list], parts: Sequence = ()) -> None:
    """Per-utterance metrics as parquet: from ``rows`` (dicts), or concatenating part files."""
    import pandas as pd

    if rows is not None:
        df = pd.DataFrame(rows, columns=UTTERANCE_COLUMNS)
    else:
        frames = [pd.read_parquet(p) for p in parts]
        df = (pd.concat(frames, ignore_index=True) if frames else
              pd.DataFrame(columns=UTTERANCE_COLUMNS))
        df = df.sort_values(["utterance", "layer", "head"], kind="stable").reset_index(drop=True)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())
