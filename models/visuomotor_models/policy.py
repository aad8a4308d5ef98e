"""Torch modules of the dynamics-aware reach policy (RMA-style teacher / student).

* :class:`TeacherPolicy` — ``pi(obs, mu(e))``: acts on the observation and a latent ``z`` that
  the privileged encoder ``mu`` computes from the true dynamics parameters ``e``
  (``DynamicsParams.as_vector``). Train time only.
* :class:`StudentPolicy` — ``pi(obs, phi(history))``: the same action head, with ``z``
  replaced by the adaptation module's estimate ``z_hat = phi(history)`` from the recent
  states and commands. This is what is exported and deployed (inputs ``observation``,
  ``history``; outputs ``action``, ``dynamics_latent``).
* :class:`MemorylessPolicy` — the no-history ablation: ``pi(obs)``; declares the ``history``
  input (same interface) but ignores it.

Feature layouts come from :mod:`visuomotor_core.policy_features`. Inputs are normalized
inside the modules (fixed buffers fitted on training data), so the exported graph takes the
raw SI features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from visuomotor_core.policy_features import (
    DEFAULT_HISTORY_LENGTH,
    HISTORY_DIM,
    N_JOINTS,
    OBSERVATION_DIM,
)
from visuomotor_sim.randomization import DYNAMICS_VECTOR_DIM

PRIVILEGED_DIM = DYNAMICS_VECTOR_DIM  # DynamicsParams.as_vector()
_STD_FLOOR = 1e-3


@dataclass(frozen=True)
class PolicyNetConfig:
    """Sizes of the policy networks.

    Attributes:
        latent_dim: size of the dynamics latent z.
        hidden: width of the action head's hidden layers.
        adapt_hidden: width of the adaptation module's hidden layers.
        history_length: H, rows of the history window.
    """

    latent_dim: int = 8
    hidden: int = 256
    adapt_hidden: int = 128
    history_length: int = DEFAULT_HISTORY_LENGTH

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 1:
                raise ValueError(f"PolicyNetConfig.{name} must be >= 1, got {value}")


class Normalizer(nn.Module):
    """``(x - mean) / std`` with fixed buffers (fitted once with :meth:`fit`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> None:
        flat = data.reshape(-1, data.shape[-1])
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0).clamp_min(_STD_FLOOR))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _mlp(sizes: list[int], out_act: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ELU())
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


class ActionHead(nn.Module):
    """``pi(obs, z) -> action`` in [-1, 1]^7 (tanh)."""

    def __init__(self, cfg: PolicyNetConfig, latent_dim: int) -> None:
        super().__init__()
        self.obs_norm = Normalizer(OBSERVATION_DIM)
        self.net = _mlp([OBSERVATION_DIM + latent_dim, cfg.hidden, cfg.hidden, N_JOINTS],
                        nn.Tanh())

    def forward(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.obs_norm(obs), z], dim=-1))


class PrivilegedEncoder(nn.Module):
    """``mu(e) -> z``: dynamics parameters to latent (teacher only)."""

    def __init__(self, cfg: PolicyNetConfig) -> None:
        super().__init__()
        self.net = _mlp([PRIVILEGED_DIM, 64, cfg.latent_dim])

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e)


class AdaptationModule(nn.Module):
    """``phi(history) -> z_hat``: the latent inferred from the state/command window."""

    def __init__(self, cfg: PolicyNetConfig) -> None:
        super().__init__()
        self.history_norm = Normalizer(HISTORY_DIM)
        self.net = _mlp([cfg.history_length * HISTORY_DIM, cfg.adapt_hidden, cfg.adapt_hidden,
                         cfg.latent_dim])

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return self.net(self.history_norm(history).flatten(1))


class TeacherPolicy(nn.Module):
    """``pi(obs, mu(e))``; forward returns ``(action, z)``."""

    def __init__(self, cfg: PolicyNetConfig, head: ActionHead | None = None) -> None:
        super().__init__()
        self.encoder = PrivilegedEncoder(cfg)
        self.head = head or ActionHead(cfg, cfg.latent_dim)

    def forward(self, obs: torch.Tensor, privileged: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(privileged)
        return self.head(obs, z), z


class StudentPolicy(nn.Module):
    """``pi(obs, phi(history))``; forward returns ``(action, dynamics_latent)``."""

    def __init__(self, cfg: PolicyNetConfig, head: ActionHead | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.adaptation = AdaptationModule(cfg)
        self.head = head or ActionHead(cfg, cfg.latent_dim)

    def forward(self, observation: torch.Tensor, history: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        z_hat = self.adaptation(history)
        return self.head(observation, z_hat), z_hat


class MemorylessPolicy(nn.Module):
    """Ablation ``pi(obs)``: same head without a latent; ignores ``history``."""

    def __init__(self, cfg: PolicyNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.head = ActionHead(cfg, 0)

    def forward(self, observation: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        del history  # same interface as StudentPolicy; memoryless by construction
        return self.head(observation, observation[:, :0])
