"""The corpus-job runner (:mod:`.runner`) and what every job shares: device and backend preflight
(:mod:`.preflight`), atomic output files (:mod:`.files`), one ``summary.json`` schema, clean stops on
SIGINT / SIGTERM (:mod:`.interrupt`) and progress in audio seconds (:mod:`.progress`)."""
from .files import atomic_write_bytes, atomic_write_text, check_out_dir
from .interrupt import Interrupted, handle_stop_signals, ignore_stop_signals, stop_between
from .preflight import backend_error, check_backend, resolve_device
from .progress import LONG_INPUT_FRAMES, AudioProgress
from .runner import JOB_KINDS, SUMMARY_VERSION, CorpusJob, CorpusJobConfig, ResumeError

__all__ = ["CorpusJob", "CorpusJobConfig", "ResumeError", "SUMMARY_VERSION", "JOB_KINDS", "resolve_device",
           "check_backend", "backend_error", "atomic_write_bytes", "atomic_write_text", "check_out_dir", "Interrupted",
           "handle_stop_signals", "stop_between", "ignore_stop_signals", "AudioProgress", "LONG_INPUT_FRAMES"]
