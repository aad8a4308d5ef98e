"""Vision encoder network (torch; train time only).

A small fully-convolutional trunk (a stride-2 stem, then dilated blocks for context)
produces ``K`` keypoint heatmaps at 1/2 input resolution; a spatial soft-argmax turns
each into an expected image location with sub-pixel precision. The first
``supervised_keypoints`` are tied to named points (the target's centre and foot, fixed
scene landmarks; see ``visuomotor_models.dataset.KEYPOINTS``); the rest are free
landmarks the network picks. Outputs:

* ``embedding`` [B, D]: image features (unitless; published, not used by the policy);
* ``keypoints`` [B, S, 2]: (u, v) of the supervised keypoints in input pixels (u right,
  v down, the centre of the top-left pixel at (0, 0));
* ``visibility`` [B, S]: probability that each supervised keypoint is visible, [0, 1].

The target's 3D position is not regressed: the run time back-projects the keypoints
through the calibrated camera, refined from the landmarks
(``visuomotor_core.camera_geometry``), so the network learns only what an image shows.
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
        channels: trunk widths (stem at stride 2, then stride-1 blocks with dilation
            1, 2, 4, ...).
        keypoints: number of soft-argmax keypoints (supervised first, then free ones).
        supervised_keypoints: how many of them are tied to named points.
        hidden: MLP width.
        embedding_dim: size of the embedding.
    """

    input_size: int = 128
    channels: tuple[int, ...] = (12, 16, 24, 24)
    keypoints: int = 16
    supervised_keypoints: int = 7
    hidden: int = 128
    embedding_dim: int = 16

    def __post_init__(self) -> None:
        if self.input_size < 16 or self.input_size % 2:
            raise ValueError(f"EncoderConfig.input_size must be even and >= 16, got "
                             f"{self.input_size}")
        if len(self.channels) < 2 or min(self.channels) <= 0:
            raise ValueError(f"EncoderConfig.channels needs >= 2 positive widths, got "
                             f"{self.channels}")
        for name in ("keypoints", "supervised_keypoints", "hidden", "embedding_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"EncoderConfig.{name} must be positive")
        if self.supervised_keypoints > self.keypoints:
            raise ValueError("EncoderConfig.supervised_keypoints must be <= keypoints")

    def to_dict(self) -> dict:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


class SpatialSoftArgmax(nn.Module):
    """Heatmaps [B, K, h, w] -> expected location per keypoint [B, K, 2] in input pixels
    (u, v), for heatmaps at half the input resolution whose cell (i, j) is centred on input
    pixel (2 j, 2 i)."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32) * 2.0,
                                torch.arange(width, dtype=torch.float32) * 2.0, indexing="ij")
        self.register_buffer("grid_u", xs.reshape(1, 1, -1), persistent=False)
        self.register_buffer("grid_v", ys.reshape(1, 1, -1), persistent=False)
        # Start with sharp-ish heatmaps: a near-uniform softmax over h*w cells would give
        # each logit a vanishing gradient.
        self.log_temperature = nn.Parameter(torch.full((1,), -2.0))

    def forward(self, heatmaps: torch.Tensor) -> torch.Tensor:
        b, k = heatmaps.shape[0], heatmaps.shape[1]
        flat = heatmaps.reshape(b, k, -1) * torch.exp(-self.log_temperature)
        weights = torch.softmax(flat, dim=-1)
        u = (weights * self.grid_u).sum(-1)
        v = (weights * self.grid_v).sum(-1)
        return torch.stack([u, v], dim=2)


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1) -> nn.Module:
    pad = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, pad, dilation, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class VisionEncoder(nn.Module):
    """Image [B, 3, S, S] -> (embedding [B, D], keypoints [B, K_s, 2], visibility [B, K_s])."""

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or EncoderConfig()
        ch = cfg.channels
        layers = [_conv(3, ch[0], 5, stride=2)]
        for i in range(1, len(ch)):
            layers.append(_conv(ch[i - 1], ch[i], 3, dilation=2 ** (i - 1)))
        self.trunk = nn.Sequential(*layers)
        self.heatmaps = nn.Conv2d(ch[-1], cfg.keypoints, 1)
        side = cfg.input_size // 2
        self.softargmax = SpatialSoftArgmax(side, side)
        self.pool = nn.AdaptiveAvgPool2d(1)
        features = 2 * cfg.keypoints + ch[-1]
        self.mlp = nn.Sequential(nn.Linear(features, cfg.hidden), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(inplace=True))
        self.embedding = nn.Linear(cfg.hidden, cfg.embedding_dim)
        self.visibility = nn.Linear(cfg.hidden, cfg.supervised_keypoints)
        self.register_buffer("pixel_scale", torch.tensor(1.0 / cfg.input_size),
                             persistent=False)

    def forward(self, image: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.trunk(image)
        keypoints = self.softargmax(self.heatmaps(features))
        pooled = self.pool(features).flatten(1)
        hidden = self.mlp(torch.cat([keypoints.flatten(1) * self.pixel_scale, pooled], dim=1))
        supervised = keypoints[:, :self.config.supervised_keypoints]
        visibility = torch.sigmoid(self.visibility(hidden))
        return self.embedding(hidden), supervised, visibility
