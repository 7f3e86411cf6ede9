"""Importance ranking (paper sec. 7): probing tasks, head orders, head- and span-pruning curves."""
from .probes import (TASKS, ProbeFeatures, ProbeUtterance, TaskSkipped, extract_probe_features, frame_phone_labels,
                     load_probe_utterances, phone_probe, reconstruction_l1, run_task, speaker_frame_probe,
                     speaker_utterance_probe)
from .spec_head import SpecHead, load_spec_head

__all__ = ["TASKS", "ProbeFeatures", "ProbeUtterance", "TaskSkipped", "extract_probe_features", "frame_phone_labels",
           "load_probe_utterances", "phone_probe", "reconstruction_l1", "run_task", "speaker_frame_probe",
           "speaker_utterance_probe", "SpecHead", "load_spec_head"]
