"""The corpus analysis job (``satkern analyze``): :func:`analyze` with an :class:`AnalyzeConfig`."""
from .accumulate import METRICS, Accumulator
from .job import AnalyzeConfig, ResumeError, analyze

__all__ = ["analyze", "AnalyzeConfig", "Accumulator", "ResumeError", "METRICS"]
