"""Latency, throughput and memory of a model, and honest speedups against a baseline.

``runner`` (:func:`benchmark`), ``latency`` (timers, interleaved timing, onnxruntime),
``memory`` (peak memory of one forward pass), ``result`` (:class:`BenchmarkResult`).
"""

from .memory import memory_method, peak_memory_mb
from .result import BenchmarkResult
from .runner import benchmark, count_macs

__all__ = ["BenchmarkResult", "benchmark", "count_macs", "memory_method", "peak_memory_mb"]
