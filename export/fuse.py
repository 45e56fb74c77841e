"""BatchNorm folding: one generic walker over the blocks' own `fuse()` methods.

Every block of `training.models` that owns a BatchNorm directly after a convolution folds it
itself (`fuse()`, built on `torch.nn.utils.fusion.fuse_conv_bn_eval`). The walker calls each of
them, then turns any BatchNorm that no block could fold (the optional pre-norm BN that sits
*before* a zero-padded conv) into the per-channel affine it is in eval mode, so that no
BatchNormalization op reaches any exported graph. `check_fusion` proves the result is the same
function on real windows.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from export import ExportError

FUSION_ATOL = 1e-4  # max abs logit difference allowed between the unfused and the folded model


class ChannelAffine(nn.Module):
    """y = x * scale[c] + shift[c] over (B, C, T): an eval-mode BatchNorm1d with nothing to fold into."""

    def __init__(self, bn: nn.BatchNorm1d):
        super().__init__()
        if bn.running_var is None or bn.running_mean is None:
            raise ValueError("ChannelAffine needs a BatchNorm1d with running statistics (track_running_stats=True)")
        inv_std = torch.rsqrt(bn.running_var + bn.eps)               # (C,)
        weight = bn.weight if bn.affine else torch.ones_like(inv_std)
        bias = bn.bias if bn.affine else torch.zeros_like(inv_std)
        scale = (weight * inv_std).detach()                          # (C,)
        self.register_buffer("scale", scale.clone())
        self.register_buffer("shift", (bias - bn.running_mean * scale).detach().clone())

    def forward(self, x):                  # x (B, C, T)
        return x * self.scale[:, None] + self.shift[:, None]  # (B, C, T)


def count_batchnorms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _replace_leftover_batchnorms(module: nn.Module) -> int:
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm1d):
            setattr(module, name, ChannelAffine(child))
            replaced += 1
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            raise ExportError(f"cannot fold {type(child).__name__} at '{name}': only BatchNorm1d is supported; "
                              "give its block a fuse() method")
        else:
            replaced += _replace_leftover_batchnorms(child)
    return replaced


def fuse_model(module: nn.Module) -> tuple[nn.Module, dict]:
    """A folded eval-mode deep copy of `module` -> (fused, report). The input is left untouched."""
    fused = copy.deepcopy(module).eval()
    before = count_batchnorms(fused)
    fuse_calls = 0
    for block in list(fused.modules()):
        fuse = getattr(block, "fuse", None)
        if callable(fuse):
            fuse()                         # each block folds only its own BN (idempotent)
            fuse_calls += 1
    folded = before - count_batchnorms(fused)
    as_affine = _replace_leftover_batchnorms(fused)
    left = count_batchnorms(fused)
    if left:
        raise ExportError(f"{left} BatchNorm layer(s) are left after folding; give their blocks a fuse() method")
    return fused, {"batchnorms": before, "folded_into_conv": folded, "as_channel_affine": as_affine,
                   "fuse_calls": fuse_calls}


@torch.no_grad()
def max_logit_difference(a: nn.Module, b: nn.Module, windows: np.ndarray) -> float:
    x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))  # (k, 128, 9)
    return float((a.eval()(x) - b.eval()(x)).abs().max())


def check_fusion(unfused: nn.Module, fused: nn.Module, windows: np.ndarray, atol: float = FUSION_ATOL) -> float:
    """Max abs logit difference of folded vs unfolded on `windows` (k,128,9); raises over `atol`."""
    diff = max_logit_difference(unfused, fused, windows)
    if not diff <= atol:
        raise ExportError(f"BatchNorm folding changed the logits by up to {diff:.3g} (allowed {atol:g}): "
                          "a fuse() method is wrong; the export stops here")
    return diff
