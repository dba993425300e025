"""Latency, throughput and memory of a model, and honest speedups against a baseline.

``runner`` (:func:`benchmark`), ``latency`` (timers, interleaved timing, onnxruntime),
``memory`` (peak memory of one forward pass), ``result`` (:class:`BenchmarkResult`),
``onnx_export`` (:func:`export_onnx`: a validated ONNX file of a pruned model).
"""

from .memory import memory_method, peak_memory_mb
from .onnx_export import export_onnx
from .result import BenchmarkResult
from .runner import benchmark, count_macs

__all__ = ["BenchmarkResult", "benchmark", "count_macs", "export_onnx", "memory_method", "peak_memory_mb"]
