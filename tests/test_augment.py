"""Augmentation: a rotated window is what the front-end makes of a rotated sensor (real recording) and what
the device's rotation (edge.mount) makes of it; a movement-scaled window keeps its gravity."""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from firmware_bridge.recording import HaptSource

from edge.frontend import filter_recording
from edge.mount import rotate_windows

from training.augment import WindowAugmentation, random_rotations, rotate_each_window, scale_movement


def test_rotations_are_proper_and_within_the_angle():
    rotations = random_rotations(500, 10.0, torch.Generator().manual_seed(0))  # (500, 3, 3)
    assert torch.allclose(rotations @ rotations.transpose(1, 2), torch.eye(3).expand(500, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rotations), torch.ones(500), atol=1e-5)
    trace = rotations.diagonal(dim1=1, dim2=2).sum(1)
    angles = torch.rad2deg(torch.arccos(((trace - 1) / 2).clamp(-1, 1)))
    assert angles.max() <= 10.0 + 1e-3 and angles.mean() > 3.0  # spread over the range, not all tiny


def test_rotating_windows_matches_filtering_a_rotated_sensor(hapt_user1_dir):
    raw = np.asarray(HaptSource(hapt_user1_dir).read_experiment(1, 1))[:3000]        # (3000, 6) acc g, gyro rad/s
    rotation = random_rotations(1, 8.0, torch.Generator().manual_seed(3))[0].numpy()  # (3, 3)
    rotated_raw = np.hstack([raw[:, :3] @ rotation.T, raw[:, 3:] @ rotation.T])
    from_rotated_sensor = filter_recording(rotated_raw)                     # (3000, 9)
    channels = torch.from_numpy(filter_recording(raw)[None].astype(np.float32))
    rotated_channels = rotate_each_window(channels, torch.from_numpy(rotation)[None].float())[0].numpy()
    # Equal up to the 3-sample median, which does not commute with rotation: small next to the signal.
    error = np.abs(rotated_channels - from_rotated_sensor)
    scale = np.abs(from_rotated_sensor).mean(axis=0)
    assert (error.mean(axis=0) < 0.1 * scale).all(), error.mean(axis=0) / scale
    # ...and the rotation is not a no-op: total_acc's direction moved by about the angle.
    assert np.abs(rotated_channels - channels[0].numpy()).mean() > 5 * error.mean()


def test_training_rotations_are_the_devices_rotations(hapt_user1_dir):
    """The torch batch path (one R per window) turns real windows exactly as edge.mount.rotate_windows does,
    and its matrices are scipy's for the drawn axis and angle."""
    raw = np.asarray(HaptSource(hapt_user1_dir).read_experiment(1, 1))[:3000]        # (3000, 6)
    windows = filter_recording(raw)[:8 * 128].reshape(8, 128, 9).astype(np.float32)  # (8, 128, 9)
    rotations = random_rotations(8, 20.0, torch.Generator().manual_seed(5))           # (8, 3, 3)
    turned = rotate_each_window(torch.from_numpy(windows), rotations).numpy()         # (8, 128, 9)
    for window, rotation, torch_turned in zip(windows, rotations.numpy(), turned):
        np.testing.assert_allclose(torch_turned, rotate_windows(window, rotation), atol=1e-5)
    generator = torch.Generator().manual_seed(5)  # the same draws: unit axes, then angles in [-20, 20] degrees
    axis = torch.nn.functional.normalize(torch.randn(8, 3, generator=generator), dim=1).double().numpy()
    angle = ((torch.rand(8, generator=generator) * 2 - 1) * np.radians(20.0)).double().numpy()
    expected = Rotation.from_rotvec(axis * angle[:, None]).as_matrix()                # (8, 3, 3)
    np.testing.assert_allclose(rotations.numpy(), expected, atol=1e-6)
    assert np.abs(turned - windows).mean() > 0.01  # not a no-op


def test_random_rotation_works_on_normalized_windows():
    x = torch.randn(16, 128, 9)
    mean, std = torch.randn(9), torch.rand(9) + 0.5
    same = WindowAugmentation(mean, std, seed=0)(x)
    assert torch.allclose(same, x, atol=1e-5)  # a zero angle changes nothing, the un-normalize is exact
    turned = WindowAugmentation(mean, std, seed=0, max_degrees=15.0)(x)
    raw, raw_turned = x * std + mean, turned * std + mean
    for g in range(3):  # each triad keeps its norm per time step
        assert torch.allclose(raw[..., 3 * g:3 * g + 3].norm(dim=-1), raw_turned[..., 3 * g:3 * g + 3].norm(dim=-1),
                              atol=1e-4)


def test_scaling_the_movement_keeps_gravity(hapt_user1_dir):
    raw = np.asarray(HaptSource(hapt_user1_dir).read_experiment(1, 1))[:3000]        # (3000, 6)
    window = torch.from_numpy(filter_recording(raw)[1000:1128][None].astype(np.float32))  # (1, 128, 9)
    scaled = scale_movement(window, torch.tensor([1.2]))[0]
    gravity = window[0, :, 6:9] - window[0, :, 0:3]                         # (128, 3) low-passed tilt
    assert torch.allclose(scaled[:, 6:9] - scaled[:, 0:3], gravity, atol=1e-6)
    assert torch.allclose(scaled[:, 0:6], 1.2 * window[0, :, 0:6])
    assert torch.allclose(scale_movement(window, torch.tensor([1.0])), window)


def test_intensity_augmentation_draws_scales_within_range():
    mean, std = torch.randn(9), torch.rand(9) + 0.5
    raw = torch.randn(256, 128, 9)
    x = (raw - mean) / std
    augmented = WindowAugmentation(mean, std, seed=0, intensity=0.2)(x) * std + mean
    body, body_augmented = raw[..., 0:6], augmented[..., 0:6]
    ratio = (body_augmented * body).sum(dim=(1, 2)) / body.pow(2).sum(dim=(1, 2))  # (256,) each window's scale
    assert ratio.min() >= 0.8 - 1e-4 and ratio.max() <= 1.2 + 1e-4 and ratio.std() > 0.05
    assert not WindowAugmentation(mean, std, seed=0).active
