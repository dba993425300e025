"""Profiling agent: exact MAC and parameter counts, and their spread over layer types and stages.

``profile`` (profile_macs, MacProfile), ``breakdown`` (mac_breakdown: several profiles as one
table, plot_mac_profile: drawn from it), ``counter`` (the meta-device counting pass),
``op_rules`` (per-operator MAC rules), ``tp_convention`` (torch-pruning's counting
convention), ``reference_counters`` (fvcore and torch-pruning wrappers for cross-checks).
"""

from .breakdown import mac_breakdown, plot_mac_profile
from .profile import MacProfile, profile_macs

__all__ = ["MacProfile", "mac_breakdown", "plot_mac_profile", "profile_macs"]
