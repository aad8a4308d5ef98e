"""Vision encoder network (torch; train time only).

A small fully-convolutional trunk produces ``K`` keypoint heatmaps at 1/2 input
resolution; a spatial soft-argmax turns each heatmap into an expected image location
(x, y in [-1, 1]), so the network reasons about *where* things are (the target sphere,
its post, the robot base, table edges) with sub-pixel precision. Keypoint coordinates
and globally pooled features go through an MLP to:

* ``embedding`` [B, D]: features for the policy (unitless);
* ``target_position`` [B, 3]: target sphere centre, m, the robot description's base frame;
* ``confidence`` [B, 1]: estimated fraction of the target visible to the camera, [0, 1].

Inputs are preprocessed images [B, 3, H, W] float32 (see visuomotor_core.image).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EncoderConfig:
    """Network hyper-parameters.

    Attributes:
        input_size: square input side, pixels.
        channels: trunk widths (stem at stride 2, then stride-1 blocks).
        keypoints: number of soft-argmax keypoints.
        hidden: MLP width.
        embedding_dim: size of the policy embedding.
        position_centre, position_scale: the position head predicts
            ``centre + scale * raw`` (m, base frame), so raw outputs stay O(1).
    """

    input_size: int = 128
    channels: tuple[int, ...] = (12, 16, 24)
    keypoints: int = 16
    hidden: int = 128
    embedding_dim: int = 16
    position_centre: tuple[float, float, float] = (0.5, 0.0, 0.225)
    position_scale: tuple[float, float, float] = (0.15, 0.25, 0.125)

    def __post_init__(self) -> None:
        if self.input_size < 16 or self.input_size % 2:
            raise ValueError(f"EncoderConfig.input_size must be even and >= 16, got "
                             f"{self.input_size}")
        if len(self.channels) < 2 or min(self.channels) <= 0:
            raise ValueError(f"EncoderConfig.channels needs >= 2 positive widths, got "
                             f"{self.channels}")
        for name in ("keypoints", "hidden", "embedding_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"EncoderConfig.{name} must be positive")
        if min(self.position_scale) <= 0.0:
            raise ValueError("EncoderConfig.position_scale must be positive")

    def to_dict(self) -> dict:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


class SpatialSoftArgmax(nn.Module):
    """Heatmaps [B, K, H, W] -> expected (x, y) per keypoint [B, 2K], each in [-1, 1]."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height),
                                torch.linspace(-1.0, 1.0, width), indexing="ij")
        self.register_buffer("grid_x", xs.reshape(1, 1, -1), persistent=False)
        self.register_buffer("grid_y", ys.reshape(1, 1, -1), persistent=False)
        # Start with sharp-ish heatmaps: a near-uniform softmax over H*W cells would give
        # each logit a vanishing gradient.
        self.log_temperature = nn.Parameter(torch.full((1,), -2.0))

    def forward(self, heatmaps: torch.Tensor) -> torch.Tensor:
        b, k = heatmaps.shape[0], heatmaps.shape[1]
        flat = heatmaps.reshape(b, k, -1) * torch.exp(-self.log_temperature)
        weights = torch.softmax(flat, dim=-1)
        x = (weights * self.grid_x).sum(-1)
        y = (weights * self.grid_y).sum(-1)
        return torch.cat([x, y], dim=1)


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1) -> nn.Module:
    pad = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, pad, dilation, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class VisionEncoder(nn.Module):
    """Image [B, 3, S, S] -> (embedding [B, D], target_position [B, 3], confidence [B, 1])."""

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or EncoderConfig()
        ch = cfg.channels
        layers = [_conv(3, ch[0], 5, stride=2)]
        for i in range(1, len(ch)):
            layers.append(_conv(ch[i - 1], ch[i], 3, dilation=1 + (i % 2 == 0)))
        self.trunk = nn.Sequential(*layers)
        self.heatmaps = nn.Conv2d(ch[-1], cfg.keypoints, 1)
        side = cfg.input_size // 2
        self.softargmax = SpatialSoftArgmax(side, side)
        self.pool = nn.AdaptiveAvgPool2d(1)
        features = 2 * cfg.keypoints + ch[-1]
        self.mlp = nn.Sequential(nn.Linear(features, cfg.hidden), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(inplace=True))
        self.embedding = nn.Linear(cfg.hidden, cfg.embedding_dim)
        self.position = nn.Sequential(nn.Linear(cfg.embedding_dim, cfg.hidden),
                                      nn.ReLU(inplace=True), nn.Linear(cfg.hidden, 3))
        self.confidence = nn.Linear(cfg.hidden, 1)
        self.register_buffer("position_centre",
                             torch.tensor(cfg.position_centre).reshape(1, 3), persistent=True)
        self.register_buffer("position_scale",
                             torch.tensor(cfg.position_scale).reshape(1, 3), persistent=True)

    def forward(self, image: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.forward_with_keypoints(image)[:3]

    def forward_with_keypoints(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """:meth:`forward`'s outputs plus the keypoints [B, K, 2] (x, y in [-1, 1])."""
        features = self.trunk(image)
        keypoints = self.softargmax(self.heatmaps(features))
        pooled = self.pool(features).flatten(1)
        hidden = self.mlp(torch.cat([keypoints, pooled], dim=1))
        embedding = self.embedding(hidden)
        position = self.position_centre + self.position_scale * self.position(embedding)
        confidence = torch.sigmoid(self.confidence(hidden))
        k = self.config.keypoints
        xy = torch.stack([keypoints[:, :k], keypoints[:, k:]], dim=2)
        return embedding, position, confidence, xy


def pixels_to_keypoint_coords(pixels: torch.Tensor, input_size: int) -> torch.Tensor:
    """Input-image pixel coordinates (u right, v down; pixel centres at integers) -> the
    soft-argmax's [-1, 1] coordinates (its grid cell i is centred on input pixel 2 i)."""
    return pixels / (input_size // 2 - 1) - 1.0
