"""The bundle's second output: the classifier's penultimate features, beside its logits.

Why: wearer enrolment (edge/enroll.py) fits a small personal head on the device, numpy only; it needs
what the model's last layer reads, not only what it concluded. Both classification paths end in one
nn.Linear to the classes (TCN: `head` after LayerNorm; BiLM: the last layer of `classifier` after ReLU),
so the features are that layer's input: the exported module runs the path with that layer replaced by
an identity and applies the layer itself. `check_features` proves it is the same function on real windows.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from export import ExportError
from export.fuse import FUSION_ATOL


def _last_linear(module: nn.Module, n_classes: int) -> tuple[nn.Module, str, nn.Linear]:
    """(parent, attribute name, layer) of the last registered nn.Linear that outputs n_classes."""
    found = None
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear) and child.out_features == n_classes:
                found = (parent, name, child)
    if found is None:
        raise ExportError(f"no nn.Linear to {n_classes} classes in {type(module).__name__}: the features output "
                          "needs a classification path that ends in one")
    return found


class LogitsAndFeatures(nn.Module):
    """x (B, T, 9) -> (logits (B, n_classes), features (B, F)): the path's last Linear applied to F."""

    def __init__(self, classifier: nn.Module, n_classes: int):
        super().__init__()
        self.body = copy.deepcopy(classifier).eval()
        parent, name, layer = _last_linear(self.body, n_classes)
        setattr(parent, name, nn.Identity())
        self.head = layer
        self.n_features = layer.in_features

    def forward(self, x):                  # x (B, T, 9)
        features = self.body(x)            # (B, F)
        return self.head(features), features  # (B, n_classes), (B, F)


@torch.no_grad()
def check_features(classifier: nn.Module, wrapped: LogitsAndFeatures, windows: np.ndarray,
                   atol: float = FUSION_ATOL) -> float:
    """Max |logit difference| of the wrapped path vs the path itself on windows (k, 128, 9); raises over atol
    (the last Linear was not the last step, so its input is not the penultimate features)."""
    x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))  # (k, 128, 9)
    try:
        logits, features = wrapped.eval()(x)  # (k, C), (k, F)
    except RuntimeError as e:  # the layer split off was not the path's head: shapes no longer chain
        raise ExportError(f"splitting off the last Linear to the classes breaks the classification path ({e}): "
                          "that layer is not the path's last step; the export stops here") from None
    if features.ndim != 2 or features.shape[1] != wrapped.n_features:
        raise ExportError(f"the features output has shape {tuple(features.shape)}, expected (k, {wrapped.n_features})")
    diff = float((classifier.eval()(x) - logits).abs().max())
    if not diff <= atol:
        raise ExportError(f"splitting off the last Linear changed the logits by up to {diff:.3g} (allowed {atol:g}): "
                          "that layer is not the classification path's last step; the export stops here")
    return diff
