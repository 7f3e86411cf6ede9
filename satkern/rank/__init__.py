"""Importance ranking (paper sec. 7): probing tasks, head orders, head- and span-pruning curves.

* :mod:`.probes` -- probe features (one pass of the refined model) and the four probing tasks;
* :mod:`.orders` -- head orders (G, V, D high -> low; W low -> high; random; gradient);
* :mod:`.curves` -- :func:`head_pruning_curves`, :func:`span_pruning_curves` (pandas tables);
* :mod:`.gradient` -- Michel et al.'s gradient importance through the eager attention path;
* :mod:`.figures` -- Fig. 5 and Fig. 6a; :mod:`.job` -- the ``satkern rank`` job (files, resume).
"""
from .curves import CURVE_COLUMNS, PointStore, RankSetup, build_orders, head_pruning_curves, span_pruning_curves
from .job import RankConfig, rank
from .orders import ORDERS, format_heads, head_order, parse_heads, pruning_steps, read_heads_csv
from .probes import (TASKS, ProbeFeatures, ProbeUtterance, TaskSkipped, extract_probe_features, frame_phone_labels,
                     load_probe_utterances, phone_probe, reconstruction_l1, run_task, speaker_frame_probe,
                     speaker_utterance_probe, train_frame_probe)

__all__ = ["TASKS", "ProbeFeatures", "ProbeUtterance", "TaskSkipped", "extract_probe_features", "frame_phone_labels",
           "load_probe_utterances", "phone_probe", "reconstruction_l1", "run_task", "speaker_frame_probe",
           "speaker_utterance_probe", "train_frame_probe", "CURVE_COLUMNS",
           "PointStore", "RankSetup", "build_orders", "head_pruning_curves", "span_pruning_curves", "RankConfig",
           "rank", "ORDERS", "format_heads", "head_order", "parse_heads", "pruning_steps", "read_heads_csv"]
