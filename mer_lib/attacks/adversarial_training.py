"""Adversarial training (aA2E, aA2B2E; protocol §5): the paper's adversary inside training, and the five-system stage.

:class:`PaperAdversary` is the hook :func:`mer_lib.models.train.train_model` calls every batch; :func:`train_all`
trains the study's five systems.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from mer_lib.attacks.engine import ATTACK_VERSION, paper_adversarial_examples
from mer_lib.config import AttackConfig, Profile, get_profile, systems_trained_in
from mer_lib.jobs import Executor
from mer_lib.models.nets import MERModel
from mer_lib.models.stage import train_systems


# --------------------------------------------------------------------------
# Adversarial training
# --------------------------------------------------------------------------
class PaperAdversary:
    """Adversarial-training step of aA2E / aA2B2E: paper-mode examples ``x + best`` in every ``adv_every``-th epoch.

    Parameters
    ----------
    config : AttackConfig, optional
        Supplies ``adv_train_lr``, ``adv_train_iters`` and ``adv_every`` (paper values by default).

    Attributes
    ----------
    calls, attacked_batches, epochs : int, int, list of int
        Times the training loop called the step; batches attacked; the epoch of every attacked batch.
    forward_passes, backward_passes : int
        Example passes spent by the attacks (also added to the training cost).
    """

    def __init__(self, config: AttackConfig | None = None) -> None:
        self.attack_config = config or AttackConfig()
        self.lr = float(self.attack_config.adv_train_lr)
        self.iters = int(self.attack_config.adv_train_iters)
        self.every = int(self.attack_config.adv_every)
        self.calls = 0
        self.attacked_batches = 0
        self.epochs: list[int] = []
        self.forward_passes = 0
        self.backward_passes = 0

    @property
    def config(self) -> dict:
        """The settings that change the trained model; pass as ``adversarial_config`` (hashed)."""
        return {"method": "paper", "attack_version": ATTACK_VERSION, "lr": self.lr, "max_iters": self.iters,
                "every_n_epochs": self.every, "adversary_mode": "eval", "example": "x + best",
                "loss": "emotion_mse"}

    def active(self, epoch: int) -> bool:
        """Whether ``epoch`` (numbered from 1) gets adversarial updates."""
        return epoch % self.every == 0

    def __call__(self, model: MERModel, x: torch.Tensor, y: torch.Tensor, epoch: int, cost) -> torch.Tensor | None:
        self.calls += 1
        if not self.active(epoch):
            return None
        x_adv, forward, backward = paper_adversarial_examples(model, x, y, self.lr, self.iters)
        cost.add(forward=forward, backward=backward)
        self.forward_passes += forward
        self.backward_passes += backward
        self.attacked_batches += 1
        self.epochs.append(int(epoch))
        return x_adv


def adversarial_training(profile=None) -> tuple[PaperAdversary, dict]:
    """``(step, adversarial_config)`` for :func:`mer_lib.models.stage.train_system` from a profile.

    Uses the profile's ``attack`` (else the paper values).
    """
    config = AttackConfig()
    if profile is not None:

        profile = get_profile(profile)
        config = getattr(profile, "attack", None) or config
    step = PaperAdversary(config)
    return step, step.config


def train_all(prepared, profile: str | Profile, run_dir: str | os.PathLike,
              systems: Sequence[str] | None = None, device=None,
              progress: bool = True, executor: Executor | str | int | None = None) -> dict[tuple[str, int], Path]:
    """Train (or reuse) every listed system for every seed, adversarial ones included.

    :func:`mer_lib.models.stage.train_systems` with :func:`adversarial_training` for aA2E and aA2B2E. The default:
    every default system in the order of the notebooks that train them (:func:`mer_lib.config.systems_trained_in`);
    the returned dict follows the order given.
    """
    systems = systems_trained_in() if systems is None else systems
    return train_systems(prepared, systems, profile, run_dir, device, progress, executor,
                         adversary=adversarial_training)
