"""Profiling agent: exact MAC and parameter counts, and their spread over layer types and stages.

``profile`` (profile_macs, MacProfile), ``counter`` (the meta-device counting pass),
``op_rules`` (per-operator MAC rules), ``tp_convention`` (torch-pruning's counting
convention), ``reference_counters`` (fvcore and torch-pruning wrappers for cross-checks).
"""

from .profile import MacProfile, profile_macs

__all__ = ["MacProfile", "profile_macs"]
