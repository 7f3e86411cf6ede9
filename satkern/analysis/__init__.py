"""The corpus analysis job (``satkern analyze``): :func:`analyze` with an :class:`AnalyzeConfig`."""
from .accumulate import METRICS, Accumulator
from .head_maps import HeadMaps, HeadMapsUtterance, load_head_maps
from .job import AnalyzeConfig, ResumeError, analyze

__all__ = ["analyze", "AnalyzeConfig", "Accumulator", "ResumeError", "METRICS", "load_head_maps", "HeadMaps",
           "HeadMapsUtterance"]
