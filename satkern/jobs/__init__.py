"""The corpus-job runner (:mod:`.runner`) and what every job shares: device and backend preflight
(:mod:`.preflight`), atomic output files (:mod:`.files`) and one ``summary.json`` schema."""
from .files import atomic_write_bytes, atomic_write_text, check_out_dir
from .preflight import backend_error, check_backend, resolve_device
from .runner import JOB_KINDS, SUMMARY_VERSION, CorpusJob, CorpusJobConfig, ResumeError

__all__ = ["CorpusJob", "CorpusJobConfig", "ResumeError", "SUMMARY_VERSION", "JOB_KINDS", "resolve_device",
           "check_backend", "backend_error", "atomic_write_bytes", "atomic_write_text", "check_out_dir"]
