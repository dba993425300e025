"""Third-party MAC counters, wrapped for side-by-side checks of :func:`profile_macs`.

fvcore misses fused ``scaled_dot_product_attention``, so :func:`fvcore_macs` counts a copy
of the model with ``fused_attn = False`` on its attention modules (the input model is
never changed), and keeps only the operators our default convention counts.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn

#: fvcore operator names that our default convention also counts.
FVCORE_SAME_OPS = ("conv", "linear", "matmul", "bmm", "einsum")


def fvcore_macs(model: nn.Module, example_inputs: torch.Tensor, unfuse_attention: bool = True) -> int:
    """fvcore's count of conv, linear and matmul/bmm/einsum MACs (attention un-fused on a copy)."""
    from fvcore.nn import FlopCountAnalysis

    if unfuse_attention:
        model = copy.deepcopy(model)
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(model, example_inputs)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        by_op = analysis.by_operator()
    return int(sum(v for k, v in by_op.items() if k in FVCORE_SAME_OPS))


def torch_pruning_macs(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """``torch_pruning.utils.count_ops_and_params`` as the paper used it (import-order dependent)."""
    import torch_pruning as tp

    ops, _ = tp.utils.count_ops_and_params(model, example_inputs)
    return int(ops)
