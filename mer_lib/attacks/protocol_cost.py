"""What a profile's protocol costs: example passes and arithmetic of every training and attack job.

One job per trained model (notebooks 02-04) and per attacked model and setting (notebook 05; not the waveform attacks
of notebook 09), counted as ``cost.json`` and ``summary.json`` count them: ``forward`` passes, ``backward_weights``
(training steps) and ``backward_input`` (attack iterations, weights frozen). Counts are upper bounds (nothing stops
early), exact for training in the quick and smoke profiles (patience = epoch budget). GFLOP: a forward pass is
``2 x`` :func:`mer_lib.models.nets.forward_macs`, a backward pass through the weights twice that, to the input once.
"""
from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

import pandas as pd

from mer_lib.config import AttackConfig, Profile, TrainConfig, get_profile, system_info, systems_trained_in
from mer_lib.data.split import split_lengths
from mer_lib.attacks.engine import ATTACKS, attack_kind
from mer_lib.attacks.stage import AttackSetting
from mer_lib.errors import MerError
from mer_lib.models.nets import forward_macs, system_spec
from mer_lib.models.train import validation_count


#: Columns of the pass counts.
PASS_COLUMNS: tuple[str, ...] = ("forward", "backward_weights", "backward_input")


def split_sizes(profile: str | Profile) -> tuple[int, int, int]:
    """``(train, valid, test)`` excerpt counts of a profile's dataset (360 excerpts: 288, 36, 36)."""
    profile = get_profile(profile)
    n_train, n_valid, n_test = split_lengths(profile.data.n_excerpts, profile.split.fractions)
    return n_train, n_valid, n_test


def training_passes(system: str, train: TrainConfig, attack: AttackConfig, sizes: Sequence[int],
                    epochs: int | None = None) -> dict[str, int]:
    """Example passes of training one model (as ``cost.json`` counts them), an upper bound.

    Returns a dict of ``forward``, ``backward_weights``, ``backward_input`` and ``epochs``.

    Parameters
    ----------
    system : str
        One of the five systems; aA2E and aA2B2E add the in-loop adversary.
    train, attack : TrainConfig, AttackConfig
        Epoch budget, batch size, validation quirk, head refit; the adversary (``adv_train_iters`` iterations on every
        batch of every ``adv_every``-th epoch, then one more training step on the adversarial batch).
    sizes : sequence of int
        ``(train, valid, test)`` excerpt counts.
    epochs : int, optional
        Epochs run (default: the whole budget ``train.max_epochs``).
    """
    n_train, n_valid, n_test = (int(s) for s in sizes)
    epochs = int(train.max_epochs if epochs is None else epochs)
    if epochs < 1 or epochs > train.max_epochs:
        raise MerError(f"epochs must be between 1 and the budget {train.max_epochs}, got {epochs}")
    batches = n_train // train.batch_size
    steps = epochs * batches * train.batch_size
    forward, backward_w, backward_in = steps, steps, 0
    if system_spec(system).adversarial:
        attacked = (epochs // attack.adv_every) * batches * train.batch_size
        forward += attacked * (attack.adv_train_iters + 1)  # the adversary's evaluations, the extra step
        backward_in += attacked * (attack.adv_train_iters - 1)  # the last evaluation takes no step
        backward_w += attacked
    forward += epochs * validation_count(n_valid, train.batch_size, train.val_drop_last)
    forward += n_train + n_valid + n_test + (n_train if train.refit_head else 0)  # final metrics, head refit
    return {"forward": forward, "backward_weights": backward_w, "backward_input": backward_in, "epochs": epochs}


def attack_passes(mode: str, attack: AttackConfig, n: int) -> dict[str, int]:
    """Example passes of attacking ``n`` excerpts of one model, an upper bound (as ``summary.json`` counts them).

    ``"paper"``: ``max_iters`` evaluations, a step after all but the last; ``"bounded"``, ``"bounded-l2"``:
    ``bounded_steps`` steps, each after an evaluation, and a last evaluation of the returned example.
    """
    passes = attack_kind(mode).passes(attack, n)
    return {"forward": passes["forward"], "backward_weights": 0, "backward_input": passes["backward_input"]}


def job_gflop(system: str, width: float, passes: Mapping[str, int], input_hw: tuple[int, int] = (313, 149)) -> float:
    """Arithmetic of a job's passes in GFLOP (see the module docstring)."""
    forward = 2.0 * forward_macs(system, width, input_hw)
    return (passes["forward"] * forward + passes["backward_weights"] * 2.0 * forward
            + passes["backward_input"] * forward) / 1e9


def protocol_jobs(profile: str | Profile, sizes: Sequence[int] | None = None,
                  systems: Sequence[str] | None = None,
                  input_hw: tuple[int, int] = (313, 149)) -> pd.DataFrame:
    """Every job of notebooks 02-05 under a profile, in the notebooks' order, with its passes and GFLOP.

    One row per job: ``notebook``, ``kind`` (``train``/``attack``), ``system``, ``seed``, ``setting``, the pass counts,
    ``epochs`` (training) and ``gflop``. ``sizes``: ``(train, valid, test)`` excerpt counts (default
    :func:`split_sizes`); ``systems``: those trained and attacked; ``input_hw``: frames x bands (313 x 149).
    """
    profile = get_profile(profile)
    systems = systems_trained_in() if systems is None else systems
    sizes = split_sizes(profile) if sizes is None else tuple(int(s) for s in sizes)
    train, attack, width = profile.train, profile.attack, profile.train.width
    rows = []
    for notebook in sorted({system_info(s).notebook for s in systems}):
        for system in (s for s in systems if system_info(s).notebook == notebook):
            passes = training_passes(system, train, attack, sizes)
            rows += [{"notebook": notebook, "kind": "train", "system": system, "seed": seed, "setting": "train",
                      **passes} for seed in train.seeds]
    settings = [AttackSetting.of(name, eps) for name, kind in ATTACKS.items()
                for eps in ((None,) if kind.radii is None else kind.radii(attack))]
    for setting in settings:
        passes = attack_passes(setting.name, attack, sizes[2])
        rows += [{"notebook": "05", "kind": "attack", "system": system, "seed": seed, "setting": setting.tag,
                  **passes, "epochs": 0} for system in systems for seed in train.seeds]
    table = pd.DataFrame(rows)
    table["gflop"] = [job_gflop(r.system, width, r._asdict(), input_hw) for r in table.itertuples(index=False)]
    return table


def job_seconds(jobs: pd.DataFrame, seconds_per_pass: Mapping[str, float]) -> pd.Series:
    """Predicted seconds of every job from per-example times ``train_step``, ``attack_iteration`` and ``forward``."""
    missing = {"train_step", "attack_iteration", "forward"} - set(seconds_per_pass)
    if missing:
        raise MerError(f"seconds_per_pass lacks {sorted(missing)}")
    plain = jobs["forward"] - jobs["backward_weights"] - jobs["backward_input"]
    return (jobs["backward_weights"] * seconds_per_pass["train_step"]
            + jobs["backward_input"] * seconds_per_pass["attack_iteration"] + plain * seconds_per_pass["forward"])


def makespan(seconds: Sequence[float], workers: int) -> float:
    """Wall time of jobs taken in order by the first free of ``workers`` workers."""
    if workers < 1:
        raise MerError(f"workers must be at least 1, got {workers}")
    free = [0.0] * min(workers, max(len(seconds), 1))
    for s in seconds:
        heapq.heappush(free, heapq.heappop(free) + float(s))
    return max(free)


def predict_seconds(jobs: pd.DataFrame, seconds_per_pass: Mapping[str, float], workers: int = 1) -> pd.DataFrame:
    """Predicted compute and wall seconds per notebook, from measured per-pass times (``benchmarks/protocol_cost.py``).

    Each notebook's jobs form one list (notebook 05: the paper-mode attacks, then the bounded sweep), taken in order by
    the first free of ``workers`` workers as :func:`mer_lib.jobs.run_jobs` does; start-up, data loading and analysis
    cells are not counted. Columns: ``notebook``, ``jobs``, ``gflop``, ``job_seconds`` (summed), ``wall_seconds``.
    """
    seconds = job_seconds(jobs, seconds_per_pass)
    rows = []
    for notebook, part in jobs.assign(seconds=seconds).groupby("notebook", sort=True):
        lists = [part] if notebook != "05" else [part[part["setting"] == "paper"], part[part["setting"] != "paper"]]
        rows.append({"notebook": notebook, "jobs": len(part), "gflop": float(part["gflop"].sum()),
                     "job_seconds": float(part["seconds"].sum()),
                     "wall_seconds": sum(makespan(p["seconds"].tolist(), workers) for p in lists if len(p))})
    return pd.DataFrame(rows)
