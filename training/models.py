"""The models, told in one file from the smallest block up to the factory.

Every model here maps a window of nine normalized front-end channels to six class logits:

    forward(x (B, 128, 9) normalized) -> logits (B, 6)
    training_loss(x, y)                -> (loss, parts: dict[str, detached scalar tensor])
    classifier_module()                -> nn.Module with only the classification path (what is exported)

Story:
 1. ModelConfig: every knob of every architecture, with the seed's values as defaults.
 2. Convolution blocks of the Modern TCN (seed 000): DepthwiseSeparableConv1d, LargeKernelConv1d,
    MultiScaleConvBlock, DropPath (stochastic depth), ModernTCNBlock, SqueezeExcitation1d.
 3. BaseModernTCNHAR, and PhysicsModernTCNHAR = BaseModernTCNHAR + a per-time-step physics head.
 4. BiLM (seed 001): Encoder, Decoder, BiomechanicalConstraintModule, BiLMClassifier.
 5. ARCHITECTURES (arch -> builder), the variant registry (register_model -> VARIANTS: name, config and
    description in one entry), create_model / build_model / list_models, model_summary.

Conventions kept by every block, because the export work depends on them:
 - 'same' convolutions: odd kernels with symmetric padding (k - 1) * dilation / 2, so T stays 128 with
   no cropping and no shape-dependent Python branches in forward (torch.onnx.export(dynamo=True) friendly).
 - Every block that owns a BatchNorm directly after a convolution has `fuse()`: in eval mode it folds the
   BN into that convolution in place with `torch.nn.utils.fusion.fuse_conv_bn_eval` and puts nn.Identity
   where the BN was. fuse() is idempotent and refuses to run in training mode. The one BN that is NOT
   folded is the optional pre-norm BN at the start of a TCN block: it sits *before* a zero-padded
   convolution, and an affine map before zero padding cannot be folded exactly (the padded zeros would
   become the BN shift); in eval mode it is a per-channel affine that exports as one op.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Biomechanical limits of seed 001 (virtual joints, see BiomechanicalConstraintModule).
JOINT_ANGLE_MIN, JOINT_ANGLE_MAX = -math.pi, math.pi
VELOCITY_LIMIT = 10.0
ACCELERATION_LIMIT = 50.0


class ModelConfigError(ValueError):
    """A model name, override or configuration value that cannot build a model."""


# --------------------------------------------------------------------------------------------------
# 1. Configuration
# --------------------------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    arch: str = "tcn"                      # ARCHITECTURES key: "tcn" (Modern TCN, seed 000) | "bilm" (seed 001)
    input_dim: int = 9                     # the nine UCI-HAR channels of the front-end
    seq_len: int = 128                     # samples per window (2.56 s at 50 Hz)
    n_classes: int = 6
    hidden: int = 128                      # TCN width; BiLM classifier width
    dropout: float = 0.1
    # --- Modern TCN -------------------------------------------------------------------------------
    n_layers: int = 3                      # seed: RF(3 layers) = 125 ~ T = 128
    kernel_sizes: tuple[int, ...] = (3, 7)  # parallel multi-scale branches (odd: 'same' padding)
    large_kernel: int = 21                 # depthwise large-kernel conv at start and end
    use_se: bool = True
    se_reduction: int = 8                  # squeeze-excitation bottleneck C -> C / r -> C (r=8: 270k params, toolchain.md)
    physics: bool = False                  # per-time-step head regressing the first 6 normalized channels
    physics_lambda: float = 0.05           # loss = CE + lambda * SmoothL1
    pre_norm: bool = False                 # BatchNorm at the start of each TCN block (seed improvement 7)
    drop_path: float = 0.0                 # stochastic depth, max rate (linear over blocks, timm style)
    label_smoothing: float = 0.0           # cross-entropy target smoothing (training loss only)
    # --- BiLM -------------------------------------------------------------------------------------
    latent_dim: int = 64
    num_joints: int = 32
    encoder_channels: tuple[int, ...] = (32, 64, 128)  # three conv/BN/ReLU/pool(2) stages
    recon_weight: float = 0.1
    kl_weight: float = 0.01
    biomech_weight: float = 0.05

    def __post_init__(self):
        # JSON and checkpoints give lists back; keep tuples so configs compare equal.
        self.kernel_sizes = tuple(int(k) for k in self.kernel_sizes)
        self.encoder_channels = tuple(int(c) for c in self.encoder_channels)
        self.validate()

    def validate(self) -> None:
        problems = []
        if self.arch not in ARCHITECTURES:
            problems.append(f"arch={self.arch!r} is not one of {list(ARCHITECTURES)}")
        for name in ("input_dim", "seq_len", "n_classes", "hidden", "n_layers", "large_kernel",
                     "se_reduction", "latent_dim", "num_joints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name}={value!r} must be a positive integer")
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            problems.append(f"kernel_sizes={list(self.kernel_sizes)} must be odd positive integers "
                            "(symmetric 'same' padding keeps T without cropping)")
        if isinstance(self.large_kernel, int) and self.large_kernel % 2 == 0:
            problems.append(f"large_kernel={self.large_kernel} must be odd")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} must be in [0, 1)")
        if not 0.0 <= self.label_smoothing < 1.0:
            problems.append(f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        if not 0.0 <= self.drop_path < 1.0:
            problems.append(f"drop_path={self.drop_path} must be in [0, 1)")
        for name in ("physics_lambda", "recon_weight", "kl_weight", "biomech_weight"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0")
        if self.physics and self.input_dim < 6:
            problems.append("physics=True needs input_dim >= 6 (it regresses body_acc and body_gyro)")
        if self.arch == "bilm":
            stages = len(self.encoder_channels)
            if stages < 1 or self.seq_len % (2 ** stages):
                problems.append(f"seq_len={self.seq_len} must be divisible by 2**{stages} "
                                f"(one pool(2) per encoder stage {list(self.encoder_channels)})")
        if problems:
            raise ModelConfigError("invalid model configuration: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# 2. Modern TCN blocks (seed 000)
# --------------------------------------------------------------------------------------------------
def _same_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size - 1) * dilation // 2  # exact 'same' for odd kernels


def _check_fusable(module: nn.Module) -> None:
    if module.training:
        raise RuntimeError(f"{type(module).__name__}.fuse() folds BatchNorm running statistics and needs "
                           "eval mode: call model.eval() first")


class DepthwiseSeparableConv1d(nn.Module):
    """Depthwise conv (one filter per channel) then a 1x1 pointwise conv that mixes channels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__()
        self.depthwise = nn.Conv1d(in_channels, in_channels, kernel_size, dilation=dilation,
                                   padding=_same_padding(kernel_size, dilation), groups=in_channels)
        self.pointwise = nn.Conv1d(in_channels, out_channels, 1)

    def forward(self, x):                  # x (B, C_in, T)
        return self.pointwise(self.depthwise(x))  # (B, C_out, T)


class LargeKernelConv1d(nn.Module):
    """Depthwise k=21 conv + BN: one wide (0.42 s) look at long-period, low-frequency patterns."""

    def __init__(self, channels: int, kernel_size: int = 21):
        super().__init__()
        self.depthwise = nn.Conv1d(channels, channels, kernel_size,
                                   padding=_same_padding(kernel_size), groups=channels)
        self.norm: nn.Module = nn.BatchNorm1d(channels)  # nn.Identity once fused

    def forward(self, x):                  # x (B, C, T)
        return self.norm(self.depthwise(x))  # (B, C, T)

    def fuse(self) -> None:
        if isinstance(self.norm, nn.BatchNorm1d):
            _check_fusable(self)
            self.depthwise = fuse_conv_bn_eval(self.depthwise, self.norm)
            self.norm = nn.Identity()


class ConvBranch(nn.Module):
    """One branch of the multi-scale block: DS-conv -> BN -> GELU -> Dropout."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.conv = DepthwiseSeparableConv1d(channels, channels, kernel_size, dilation)
        self.norm: nn.Module = nn.BatchNorm1d(channels)  # nn.Identity once fused
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):                  # x (B, C, T)
        return self.dropout(F.gelu(self.norm(self.conv(x))))  # (B, C, T)

    def fuse(self) -> None:
        if isinstance(self.norm, nn.BatchNorm1d):
            _check_fusable(self)
            self.conv.pointwise = fuse_conv_bn_eval(self.conv.pointwise, self.norm)
            self.norm = nn.Identity()


class MultiScaleConvBlock(nn.Module):
    """Parallel branches with kernels [3, 7] (same dilation), concatenated and fused by a 1x1 conv."""

    def __init__(self, channels: int, kernel_sizes=(3, 7), dilation: int = 1, dropout: float = 0.1):
        super().__init__()
        self.branches = nn.ModuleList(ConvBranch(channels, k, dilation, dropout) for k in kernel_sizes)
        self.fusion = nn.Conv1d(channels * len(kernel_sizes), channels, 1)

    def forward(self, x):                  # x (B, C, T)
        multi_scale = torch.cat([branch(x) for branch in self.branches], dim=1)  # (B, C * n_branches, T)
        return self.fusion(multi_scale)    # (B, C, T)


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples during training (identity in eval)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x):                  # x (B, C, T)
        if not self.training or self.p == 0.0:  # static attributes only: export sees the identity
            return x
        keep = 1.0 - self.p
        mask = torch.empty(x.shape[0], 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)  # (B, 1, 1)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ModernTCNBlock(nn.Module):
    """Residual block with dilation 2**i: [pre-norm] -> multi-scale -> DS-conv(k_max) -> BN -> GELU ->
    Dropout -> DropPath, added to the input, then GELU."""

    def __init__(self, channels: int, kernel_sizes=(3, 7), dilation: int = 1, dropout: float = 0.1,
                 pre_norm: bool = False, drop_path: float = 0.0):
        super().__init__()
        self.pre_norm = nn.BatchNorm1d(channels) if pre_norm else nn.Identity()
        self.multi_conv1 = MultiScaleConvBlock(channels, kernel_sizes, dilation, dropout)
        self.conv2 = DepthwiseSeparableConv1d(channels, channels, max(kernel_sizes), dilation)
        self.norm2: nn.Module = nn.BatchNorm1d(channels)  # nn.Identity once fused
        self.dropout2 = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):                  # x (B, C, T)
        out = self.multi_conv1(self.pre_norm(x))  # (B, C, T)
        out = self.dropout2(F.gelu(self.norm2(self.conv2(out))))  # (B, C, T)
        return F.gelu(x + self.drop_path(out))  # (B, C, T)

    def fuse(self) -> None:
        # pre_norm stays: see the module docstring (BN before zero padding does not fold exactly).
        if isinstance(self.norm2, nn.BatchNorm1d):
            _check_fusable(self)
            self.conv2.pointwise = fuse_conv_bn_eval(self.conv2.pointwise, self.norm2)
            self.norm2 = nn.Identity()


class SqueezeExcitation1d(nn.Module):
    """Standard squeeze-excitation (Hu et al. 2018) over time: mean over T -> Linear(C, C/r) -> ReLU ->
    Linear(C/r, C) -> sigmoid -> scale each channel."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        squeezed = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, squeezed)
        self.fc2 = nn.Linear(squeezed, channels)

    def forward(self, x):                  # x (B, C, T)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=2)))))  # (B, C)
        return x * gate.unsqueeze(-1)      # (B, C, T)


# --------------------------------------------------------------------------------------------------
# 3. Modern TCN classifiers
# --------------------------------------------------------------------------------------------------
class BaseModernTCNHAR(nn.Module):
    """input 1x1 projection -> large kernel -> n_layers TCN blocks (dilation 1, 2, 4) -> large kernel ->
    SE -> mean over time -> LayerNorm -> Linear. Loss: cross-entropy."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config.hidden
        self.input_proj = nn.Conv1d(config.input_dim, c, 1)
        self.large_kernel_conv = LargeKernelConv1d(c, config.large_kernel)
        rates = [config.drop_path * i / max(1, config.n_layers - 1) for i in range(config.n_layers)]
        self.tcn_blocks = nn.ModuleList(
            ModernTCNBlock(c, config.kernel_sizes, dilation=2 ** i, dropout=config.dropout,
                           pre_norm=config.pre_norm, drop_path=rates[i])
            for i in range(config.n_layers))
        self.final_large_kernel = LargeKernelConv1d(c, config.large_kernel)
        self.se = SqueezeExcitation1d(c, config.se_reduction) if config.use_se else nn.Identity()
        self.norm_final = nn.LayerNorm(c)
        self.head = nn.Linear(c, config.n_classes)

    def features(self, x):                 # x (B, T, 9) normalized
        h = self.input_proj(x.transpose(1, 2))  # (B, C, T)
        h = F.gelu(self.large_kernel_conv(h))  # (B, C, T)
        for block in self.tcn_blocks:
            h = block(h)                   # (B, C, T)
        h = F.gelu(self.final_large_kernel(h))  # (B, C, T)
        return self.se(h)                  # (B, C, T)

    def classify(self, h):                 # h (B, C, T)
        return self.head(self.norm_final(h.mean(dim=2)))  # (B, n_classes)

    def forward(self, x):                  # x (B, T, 9)
        return self.classify(self.features(x))  # (B, n_classes)

    def training_loss(self, x, y):
        ce = F.cross_entropy(self(x), y, label_smoothing=self.config.label_smoothing)
        return ce, {"ce": ce.detach()}

    def classifier_module(self) -> nn.Module:
        return self


class PhysicsModernTCNHAR(nn.Module):
    """BaseModernTCNHAR plus a physics head: a per-time-step MLP (C -> C/2 -> 6) on the backbone's
    features predicting the first six *normalized* input channels (body_acc xyz, body_gyro xyz).
    Loss: CE + physics_lambda * (SmoothL1(acc) + SmoothL1(gyro)). The head is an auxiliary task for
    training only; forward() and classifier_module() never run it."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = BaseModernTCNHAR(config)
        c = config.hidden
        self.physics_head = nn.Sequential(nn.Linear(c, c // 2), nn.ReLU(), nn.Linear(c // 2, 6))

    def forward(self, x):                  # x (B, T, 9)
        return self.backbone(x)            # (B, n_classes)

    def forward_with_physics(self, x):     # x (B, T, 9)
        h = self.backbone.features(x)      # (B, C, T)
        logits = self.backbone.classify(h)  # (B, n_classes)
        physics = self.physics_head(h.transpose(1, 2))  # (B, T, 6)
        return logits, physics

    def training_loss(self, x, y):
        logits, physics = self.forward_with_physics(x)
        ce = F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)
        phys = (F.smooth_l1_loss(physics[..., 0:3], x[..., 0:3])     # body_acc
                + F.smooth_l1_loss(physics[..., 3:6], x[..., 3:6]))  # body_gyro
        loss = ce + self.config.physics_lambda * phys
        return loss, {"ce": ce.detach(), "physics": phys.detach()}

    def classifier_module(self) -> nn.Module:
        return self.backbone               # shares the weights: fuse before or after, same modules


# --------------------------------------------------------------------------------------------------
# 4. BiLM: VAE latent classifier with a biomechanical constraint (seed 001)
# --------------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    """(B, 9, T) -> stages of conv(k5)/BN/ReLU/maxpool(2) -> per-step features h (B, 128, T/8);
    flattened h -> window latent mu, logvar (B, D); a 1x1 conv maps each step of h into the same
    latent space -> latent trajectory (B, T/8, D) for the biomechanical loss."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        chans = (config.input_dim, *config.encoder_channels)
        self.convs = nn.ModuleList(nn.Conv1d(chans[i], chans[i + 1], 5, padding=2)
                                   for i in range(len(chans) - 1))
        self.norms = nn.ModuleList(nn.BatchNorm1d(c) for c in chans[1:])
        self.pool = nn.MaxPool1d(2)
        self.steps = config.seq_len // 2 ** len(config.encoder_channels)
        flat = chans[-1] * self.steps
        self.dropout = nn.Dropout(config.dropout)
        self.fc_mu = nn.Linear(flat, config.latent_dim)
        self.fc_logvar = nn.Linear(flat, config.latent_dim)
        self.step_latent = nn.Conv1d(chans[-1], config.latent_dim, 1)

    def trunk(self, x):                    # x (B, T, 9)
        h = x.transpose(1, 2)              # (B, 9, T)
        for conv, norm in zip(self.convs, self.norms):
            h = self.pool(F.relu(norm(conv(h))))  # (B, C_i, T / 2**i)
        return h                           # (B, 128, T/8)

    def forward(self, x):                  # x (B, T, 9)
        h = self.trunk(x)                  # (B, 128, T/8)
        flat = self.dropout(h.flatten(1))  # (B, 128 * T/8)
        return self.fc_mu(flat), self.fc_logvar(flat)  # (B, D), (B, D)

    def encode_with_trajectory(self, x):   # x (B, T, 9)
        h = self.trunk(x)                  # (B, 128, T/8)
        flat = self.dropout(h.flatten(1))  # (B, 128 * T/8)
        trajectory = self.step_latent(h).transpose(1, 2)  # (B, T/8, D)
        return self.fc_mu(flat), self.fc_logvar(flat), trajectory

    def fuse(self) -> None:
        for i, norm in enumerate(self.norms):
            if isinstance(norm, nn.BatchNorm1d):
                _check_fusable(self)
                conv = self.convs[i]
                assert isinstance(conv, nn.Conv1d)
                self.convs[i] = fuse_conv_bn_eval(conv, norm)
                self.norms[i] = nn.Identity()


class Decoder(nn.Module):
    """z (B, D) -> Linear -> (B, 128, T/8) -> ConvTranspose(k4, s2)/BN/ReLU ... -> (B, 9, T)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        chans = (*reversed(config.encoder_channels), config.input_dim)  # 128, 64, 32, 9
        self.steps = config.seq_len // 2 ** len(config.encoder_channels)
        self.start_channels = chans[0]
        self.fc = nn.Linear(config.latent_dim, chans[0] * self.steps)
        self.deconvs = nn.ModuleList(nn.ConvTranspose1d(chans[i], chans[i + 1], 4, stride=2, padding=1)
                                     for i in range(len(chans) - 1))
        # BN + ReLU after every stage but the last (the output is the normalized signal itself).
        self.norms = nn.ModuleList(nn.BatchNorm1d(c) for c in chans[1:-1])

    def forward(self, z):                  # z (B, D)
        h = self.fc(z).reshape(z.shape[0], self.start_channels, self.steps)  # (B, 128, T/8)
        for i, deconv in enumerate(self.deconvs):
            h = deconv(h)                  # (B, C_i, 2 * T_i)
            if i < len(self.norms):
                h = F.relu(self.norms[i](h))
        return h                           # (B, 9, T)

    def fuse(self) -> None:
        for i, norm in enumerate(self.norms):
            if isinstance(norm, nn.BatchNorm1d):
                _check_fusable(self)
                deconv = self.deconvs[i]
                assert isinstance(deconv, nn.ConvTranspose1d)
                self.deconvs[i] = fuse_conv_bn_eval(deconv, norm, transpose=True)
                self.norms[i] = nn.Identity()


class BiomechanicalConstraintModule(nn.Module):
    """Reads each latent z_t as the state of `num_joints` virtual joints and asks a latent *trajectory*
    z_1..z_S to move like a body: angles = pi * tanh-MLP(z_t); velocity and acceleration are finite
    differences of the angles over the trajectory; two small MLPs must predict them from z_t, their
    magnitudes are penalized above VELOCITY_LIMIT / ACCELERATION_LIMIT, and jerky angles cost a little.

    Where the trajectory comes from (the fix of the seed's flaw). The seed built its "sequence" from one
    window latent plus Gaussian noise, so the finite differences measured only the noise. Here the
    sequence is real and temporal: the BiLM encoder's conv trunk keeps time (B, 128, T/8 = 16 steps of
    8 samples = 160 ms, each step seeing 36 samples), and `Encoder.step_latent`, a 1x1 conv, maps every
    step into the latent space -> z_seq (B, 16, D). The step latents are tied to the window latent by an
    anchor term, mean_t z_t ~ mu (MSE), so the joint mapping reads the same space the classifier reads,
    and the biomechanical gradients reach the classifier through the shared conv trunk and fc_mu.
    """

    def __init__(self, latent_dim: int, num_joints: int = 32):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_joints = num_joints
        self.joint_mapper = nn.Sequential(nn.Linear(latent_dim, 64), nn.ReLU(),
                                          nn.Linear(64, num_joints), nn.Tanh())
        self.velocity_net = nn.Sequential(nn.Linear(latent_dim, 32), nn.ReLU(), nn.Linear(32, num_joints))
        self.accel_net = nn.Sequential(nn.Linear(latent_dim, 32), nn.ReLU(), nn.Linear(32, num_joints))

    def compute_joint_angles(self, z):     # z (..., D)
        unit = self.joint_mapper(z)        # (..., J) in [-1, 1]
        half_range = (JOINT_ANGLE_MAX - JOINT_ANGLE_MIN) / 2
        return unit * half_range + (JOINT_ANGLE_MAX + JOINT_ANGLE_MIN) / 2  # (..., J) radians

    def biomechanical_loss(self, z_sequence, mu=None):  # z_sequence (B, S, D), mu (B, D)
        angles = self.compute_joint_angles(z_sequence)  # (B, S, J)
        velocity = angles[:, 1:] - angles[:, :-1]  # (B, S-1, J)
        accel = velocity[:, 1:] - velocity[:, :-1]  # (B, S-2, J)
        velocity_pred = self.velocity_net(z_sequence[:, :-1])  # (B, S-1, J)
        accel_pred = self.accel_net(z_sequence[:, :-2])  # (B, S-2, J)
        parts = {
            "velocity_consistency": F.mse_loss(velocity_pred, velocity),
            "accel_consistency": F.mse_loss(accel_pred, accel),
            "velocity_violation": F.relu(velocity.norm(dim=-1) - VELOCITY_LIMIT).mean(),
            "accel_violation": F.relu(accel.norm(dim=-1) - ACCELERATION_LIMIT).mean(),
            "smoothness": velocity.pow(2).mean(),
        }
        total = (parts["velocity_consistency"] + parts["accel_consistency"]
                 + 0.1 * parts["velocity_violation"] + 0.1 * parts["accel_violation"]
                 + 0.01 * parts["smoothness"])
        if mu is not None:
            parts["anchor"] = F.mse_loss(z_sequence.mean(dim=1), mu)
            total = total + parts["anchor"]
        return total, parts


class LatentClassifier(nn.Module):
    """The BiLM classification path only: encoder -> mu -> MLP. Shares modules with its BiLMClassifier."""

    def __init__(self, encoder: Encoder, classifier: nn.Sequential):
        super().__init__()
        self.encoder = encoder
        self.classifier = classifier

    def forward(self, x):                  # x (B, T, 9)
        mu, _ = self.encoder(x)            # (B, D)
        return self.classifier(mu)         # (B, n_classes)


class BiLMClassifier(nn.Module):
    """Biomechanical Inverse-Latent Modeling: a VAE whose latent is classified.
    Training: z = mu + sigma * eps; loss = CE(classifier(z)) + 0.1 MSE(decoder(z), x) + 0.01 KL
    + 0.05 biomech(real latent trajectory, see BiomechanicalConstraintModule). Inference: classify mu."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.biomech_module = BiomechanicalConstraintModule(config.latent_dim, config.num_joints)
        h = config.hidden
        self.classifier = nn.Sequential(
            nn.Linear(config.latent_dim, h), nn.ReLU(), nn.Dropout(config.dropout),
            nn.Linear(h, h // 2), nn.ReLU(), nn.Dropout(config.dropout),
            nn.Linear(h // 2, config.n_classes))

    @staticmethod
    def reparameterize(mu, logvar):        # (B, D), (B, D)
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # (B, D)

    def forward(self, x):                  # x (B, T, 9)
        mu, logvar = self.encoder(x)       # (B, D)
        z = self.reparameterize(mu, logvar) if self.training else mu  # (B, D)
        return self.classifier(z)          # (B, n_classes)

    def training_loss(self, x, y):
        cfg = self.config
        mu, logvar, trajectory = self.encoder.encode_with_trajectory(x)  # (B, D), (B, D), (B, S, D)
        z = self.reparameterize(mu, logvar)  # (B, D)
        ce = F.cross_entropy(self.classifier(z), y, label_smoothing=cfg.label_smoothing)
        recon = F.mse_loss(self.decoder(z), x.transpose(1, 2))  # decoder output (B, 9, T)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.shape[0]
        biomech, _ = self.biomech_module.biomechanical_loss(trajectory, mu)
        loss = ce + cfg.recon_weight * recon + cfg.kl_weight * kl + cfg.biomech_weight * biomech
        parts = {"ce": ce, "recon": recon, "kl": kl, "biomech": biomech}
        return loss, {k: v.detach() for k, v in parts.items()}

    def classifier_module(self) -> nn.Module:
        return LatentClassifier(self.encoder, self.classifier)


# --------------------------------------------------------------------------------------------------
# 5. Named variants, factory and summary
# --------------------------------------------------------------------------------------------------
def _build_tcn(config: ModelConfig) -> nn.Module:
    return PhysicsModernTCNHAR(config) if config.physics else BaseModernTCNHAR(config)


def _tcn_receptive_field(config: ModelConfig) -> int:
    """Seed 000 formula: 1 + (k_large - 1) + 2 (k_max - 1) sum_i 2**i + (k_large - 1); 125 for 3 layers."""
    k_max = max(config.kernel_sizes)
    return (1 + (config.large_kernel - 1) + 2 * (k_max - 1) * sum(2 ** i for i in range(config.n_layers))
            + (config.large_kernel - 1))


def _bilm_receptive_field(config: ModelConfig) -> int:
    """fc_mu reads the whole flattened trunk, so every output sees the whole window."""
    return config.seq_len


@dataclass(frozen=True)
class Architecture:
    """What ModelConfig.arch selects: how to build the model and its theoretical receptive field (samples)."""
    build: Callable[[ModelConfig], nn.Module]
    receptive_field: Callable[[ModelConfig], int]


ARCHITECTURES: dict[str, Architecture] = {
    "tcn": Architecture(build=_build_tcn, receptive_field=_tcn_receptive_field),
    "bilm": Architecture(build=BiLMClassifier, receptive_field=_bilm_receptive_field),
}


@dataclass(frozen=True)
class ModelVariant:
    """One named model (timm-style registry entry): its name, its configuration and what it is."""
    name: str
    config: ModelConfig
    description: str


VARIANTS: dict[str, ModelVariant] = {}


def register_model(name: str, config: ModelConfig, description: str) -> ModelVariant:
    """Add a named variant; `har-train models`, create_model and --set model=NAME all read VARIANTS."""
    if name in VARIANTS:
        raise ModelConfigError(f"model variant {name!r} is registered twice")
    variant = ModelVariant(name, config, description)
    VARIANTS[name] = variant
    return variant


register_model("tcn_base", ModelConfig(arch="tcn", hidden=128, physics=False),
               "Base Modern TCN of seed 000 (no physics head)")
register_model("tcn_physics", ModelConfig(arch="tcn", hidden=128, physics=True),
               "Physics Modern TCN, hidden 128 (seed size)")
register_model("tcn_physics_h64", ModelConfig(arch="tcn", hidden=64, physics=True), "Physics Modern TCN, hidden 64")
register_model("tcn_physics_h32", ModelConfig(arch="tcn", hidden=32, physics=True), "Physics Modern TCN, hidden 32")
register_model("bilm", ModelConfig(arch="bilm", hidden=128, dropout=0.3),
               "BiLM VAE latent classifier of seed 001 (real latent trajectory for the biomech loss)")
# A few thousand parameters, for fast tests only.
register_model("tcn_tiny", ModelConfig(arch="tcn", hidden=16, physics=True), "Physics Modern TCN, hidden 16 (tests)")


def list_models() -> list[str]:
    return list(VARIANTS)


def model_config(name: str, **overrides) -> ModelConfig:
    """The variant's ModelConfig with overrides applied (unknown names and keys raise ModelConfigError)."""
    if name not in VARIANTS:
        raise ModelConfigError(f"unknown model {name!r}; choose one of {list_models()} "
                               "(`har-train models` lists them with sizes)")
    valid = [f.name for f in fields(ModelConfig)]
    unknown = [k for k in overrides if k not in valid]
    if unknown:
        raise ModelConfigError(f"unknown model option(s) {unknown} for {name!r}; valid options: {valid}")
    return replace(VARIANTS[name].config, **overrides)  # replace() re-runs validation


def build_model(config: ModelConfig | dict) -> nn.Module:
    if isinstance(config, dict):
        valid = {f.name for f in fields(ModelConfig)}
        unknown = sorted(set(config) - valid)
        if unknown:
            raise ModelConfigError(f"model config has unknown key(s) {unknown}; valid keys: {sorted(valid)}")
        config = ModelConfig(**config)
    return ARCHITECTURES[config.arch].build(config)  # arch was checked by ModelConfig.validate


def create_model(name: str, **overrides) -> nn.Module:
    """timm-style factory: create_model("tcn_physics_h64", dropout=0.2). The name stays with the checkpoint
    (make_checkpoint's model_name), not on the module."""
    return build_model(model_config(name, **overrides))


def receptive_field(config: ModelConfig) -> int:
    """Theoretical receptive field in samples, by architecture (see ARCHITECTURES)."""
    return ARCHITECTURES[config.arch].receptive_field(config)


def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of Conv1d / ConvTranspose1d / Linear for one forward pass (forward hooks).
    Elementwise ops (BN, GELU, SE scaling, pooling, LayerNorm) are not counted; they are a few % at most."""
    total = 0

    def conv_hook(mod, inputs, output):
        nonlocal total
        per_output = (mod.in_channels // mod.groups) * mod.kernel_size[0]
        total += output.numel() * per_output

    def deconv_hook(mod, inputs, output):
        nonlocal total
        # every input element is multiplied into (out_channels / groups) * k outputs
        total += inputs[0].numel() * (mod.out_channels // mod.groups) * mod.kernel_size[0]

    def linear_hook(mod, inputs, output):
        nonlocal total
        total += output.numel() * mod.in_features

    handles = []
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose1d):
            handles.append(m.register_forward_hook(deconv_hook))
        elif isinstance(m, nn.Conv1d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return total


def model_summary(model: nn.Module) -> dict:
    """params: parameters of the classification path (what ships); params_train: all, incl. auxiliary
    heads / decoder; macs: multiply-accumulates per window of the classification path (batch 1);
    receptive_field: theoretical, in samples."""
    config: ModelConfig = model.config  # type: ignore[assignment]  # every registry model has one (torch types it Tensor | Module)
    path: nn.Module = model.classifier_module()  # type: ignore[operator]  # likewise
    return {
        "params": sum(p.numel() for p in path.parameters()),
        "params_train": sum(p.numel() for p in model.parameters()),
        "macs": count_macs(path, (1, config.seq_len, config.input_dim)),
        "receptive_field": receptive_field(config),
    }
