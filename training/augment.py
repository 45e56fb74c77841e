"""Training-time augmentation: small random rotations of the sensor.

Users strap the board on at slightly different angles; most of the cross-subject errors are SITTING vs
STANDING, told apart by how gravity falls on the axes. Rotating a window by a few degrees simulates another
mounting of the same movement. Every channel triad (body_acc, body_gyro, total_acc) is a 3-vector in the
sensor frame, so one rotation R applies to all three. The front-end is linear and per channel apart from
its 3-sample median, so rotating its output equals filtering the rotated raw stream up to that median.
"""
from __future__ import annotations

import math

import torch


def random_rotations(n: int, max_degrees: float, generator: torch.Generator) -> torch.Tensor:
    """-> (n, 3, 3) rotation matrices about uniformly random axes by angles uniform in [-max, max] degrees."""
    axis = torch.randn(n, 3, generator=generator)
    axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-12)           # (n, 3) unit axes
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_degrees)  # (n,)
    zero = torch.zeros(n)
    k = torch.stack([                                                          # (n, 3, 3) cross-product matrix
        torch.stack([zero, -axis[:, 2], axis[:, 1]], 1),
        torch.stack([axis[:, 2], zero, -axis[:, 0]], 1),
        torch.stack([-axis[:, 1], axis[:, 0], zero], 1)], 1)
    sin, cos = angle.sin()[:, None, None], angle.cos()[:, None, None]
    return torch.eye(3).expand(n, 3, 3) + sin * k + (1 - cos) * (k @ k)     # Rodrigues' formula


def rotate_windows(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """x (B, T, 9) un-normalized, channels as three xyz triads; rotations (B, 3, 3) -> (B, T, 9)."""
    b, t, _ = x.shape
    triads = x.reshape(b, t, 3, 3)                                             # (B, T, triad, xyz)
    return torch.einsum("bij,btgj->btgi", rotations, triads).reshape(b, t, 9)


class RandomRotation:
    """Rotates normalized windows in the sensor frame: un-normalize, rotate, normalize again."""

    def __init__(self, max_degrees: float, mean, std, seed: int):
        self.max_degrees = max_degrees
        self.mean = torch.as_tensor(mean, dtype=torch.float32)  # (9,)
        self.std = torch.as_tensor(std, dtype=torch.float32)    # (9,)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:      # x (B, T, 9) normalized
        raw = x * self.std + self.mean
        rotated = rotate_windows(raw, random_rotations(len(x), self.max_degrees, self.generator))
        return (rotated - self.mean) / self.std
