"""Training-time augmentation: small random rotations of the sensor, and movements of other intensity.

Users strap the board on at slightly different angles; most of the cross-subject errors are SITTING vs
STANDING, told apart by how gravity falls on the axes. Rotating a window by a few degrees simulates another
mounting of the same movement. Every channel triad (body_acc, body_gyro, total_acc) is a 3-vector in the
sensor frame, so one rotation R applies to all three. The front-end is linear and per channel apart from
its 3-sample median, so rotating its output equals filtering the rotated raw stream up to that median.

People also walk, climb and fidget with their own vigour: scaling a window's movement (body_acc, body_gyro)
by s, while gravity stays where it is (total_acc = gravity + s * body_acc), simulates that.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from edge.mount import rotation_matrix


def random_rotations(n: int, max_degrees: float, generator: torch.Generator) -> torch.Tensor:
    """-> (n, 3, 3) rotation matrices about uniformly random axes by angles uniform in [-max, max] degrees.
    The draws are torch's (seeded, checkpointed with the generator); the matrices are edge.mount's
    rotation_matrix, the one Rodrigues' formula the device uses."""
    axis = torch.randn(n, 3, generator=generator)
    axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-12)           # (n, 3) unit axes
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_degrees)  # (n,)
    rotvecs = (axis * angle[:, None]).double().numpy()                        # (n, 3) axis * angle
    return torch.from_numpy(np.array([rotation_matrix(v) for v in rotvecs]).reshape(n, 3, 3)).float()


def rotate_each_window(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """x (B, T, 9) un-normalized, channels as three xyz triads; rotations (B, 3, 3), one per window
    -> (B, T, 9), v' = R v per triad (edge.mount.rotate_windows turns every window by one R)."""
    b, t, _ = x.shape
    triads = x.reshape(b, t, 3, 3)                                             # (B, T, triad, xyz)
    return torch.einsum("bij,btgj->btgi", rotations, triads).reshape(b, t, 9)


def scale_movement(x: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x (B, T, 9) un-normalized [body_acc, body_gyro, total_acc]; scales (B,) -> (B, T, 9) with the
    movement scaled and gravity (total_acc - body_acc) kept."""
    s = scales[:, None, None]                                                  # (B, 1, 1)
    body_acc, body_gyro, total_acc = x[..., 0:3], x[..., 3:6], x[..., 6:9]     # (B, T, 3) each
    return torch.cat([s * body_acc, s * body_gyro, total_acc + (s - 1) * body_acc], dim=-1)


class WindowAugmentation:
    """Augments normalized windows in physical units: un-normalize, rotate and/or scale the movement,
    normalize again. Rotation up to `max_degrees`; movement scaled by a factor uniform in 1 +- `intensity`."""

    def __init__(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor, seed: int,
                 max_degrees: float = 0.0, intensity: float = 0.0):
        self.max_degrees = max_degrees
        self.intensity = intensity
        self.mean = torch.as_tensor(mean, dtype=torch.float32)  # (9,)
        self.std = torch.as_tensor(std, dtype=torch.float32)    # (9,)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def active(self) -> bool:
        return self.max_degrees > 0 or self.intensity > 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:      # x (B, T, 9) normalized
        raw = x * self.std + self.mean                          # (B, T, 9) physical units
        if self.max_degrees > 0:
            raw = rotate_each_window(raw, random_rotations(len(x), self.max_degrees, self.generator))
        if self.intensity > 0:
            scales = 1 + (torch.rand(len(x), generator=self.generator) * 2 - 1) * self.intensity  # (B,)
            raw = scale_movement(raw, scales)
        return (raw - self.mean) / self.std
