"""Heads refit post hoc on frozen trained backbones: the ridge sweep and the head swap (protocol §7).

:func:`ridge_sweep` refits a trained model's own head layers at other ridge penalties (the penalty sets the head's
gain); :func:`head_swap` puts a direct emotion layer (``"direct"``) or 7 units fit to the mid-level annotations plus an
emotion layer (``"units"``, A2M2E's route) on one backbone. Each variant is a model folder under
``<run>/posthoc/<label>/`` (loadable by :func:`mer_lib.models.stage.load_model_dir`), keyed by a hash of the source
model, the head and the ridge, and reused when present.
"""
from __future__ import annotations

import copy
import functools
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mer_lib import artifacts
from mer_lib.config import RunLayout, TrainConfig
from mer_lib.errors import MerError
from mer_lib.models.nets import build_model
from mer_lib.models.refit import refit_head
from mer_lib.models.stage import MODELS, RECORDED_FILES, load_model_dir, split_arrays
from mer_lib.models.train import resolve_device, save_torch

__all__ = ["HEADS", "HEAD_SYSTEMS", "SWEEP_RIDGES", "variant_label", "posthoc_heads", "ridge_sweep", "head_swap"]

#: The heads of the swap and the architecture that carries each.
HEAD_SYSTEMS: dict[str, str] = {"direct": "A2E", "units": "A2M2E"}
HEADS = tuple(HEAD_SYSTEMS)


def variant_label(system: str, ridge: float, head: str | None = None) -> str:
    """The name in tables: ``"A2E, ridge 0.1"`` or ``"A2E backbone + units head, ridge 0.01"``."""
    if head is None:
        return f"{system}, ridge {ridge:g}"
    return f"{system} backbone + {head} head, ridge {ridge:g}"


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label).strip("_")


def _variant(model, head: str | None):
    """The model to refit: the trained one, or its backbone under the swapped head's architecture."""
    if head is None:
        return copy.deepcopy(model)  # every variant starts from the trained model, not from the previous variant
    if head not in HEAD_SYSTEMS:
        raise MerError(f"posthoc_heads: head must be one of {list(HEAD_SYSTEMS)} or None, got {head!r}")
    swapped = build_model(HEAD_SYSTEMS[head], model.width)
    swapped.backbone.load_state_dict(model.backbone.state_dict())
    return swapped.to(next(model.parameters()).device)


def _refit(source: Path, model, head: str | None, key: dict, arrays: tuple, device) -> Callable:
    """The computation of one variant's folder (:meth:`mer_lib.artifacts.CachedStage.run`)."""
    def compute(out: Path) -> tuple[tuple[str, ...], dict]:
        variant = _variant(model(), head)
        record = refit_head(variant, *arrays, float(key["ridge"]), device=device)
        save_torch(out / "model.pt", {k: v.cpu().contiguous() for k, v in variant.state_dict().items()})
        for name in RECORDED_FILES[1:]:  # the source's history and cost: the backbone's training
            shutil.copyfile(source / name, out / name)
        metrics = artifacts.read_json(source / "metrics.json")
        return RECORDED_FILES, {**metrics, "system": variant.system, "posthoc": key, "head_refit": record}
    return compute


def posthoc_heads(model_dirs: Mapping[tuple[str, int], str | os.PathLike], prepared, run_dir: str | os.PathLike,
                  ridges: Sequence[float], heads: Sequence[str | None] = (None,),
                  device: str | torch.device | None = None) -> pd.DataFrame:
    """Refit the heads of trained models post hoc at every ridge, for every head; write or reuse the folders.

    Parameters
    ----------
    model_dirs : mapping
        ``(system, seed) -> trained model folder``.
    prepared : PreparedData
        The heads are fit on its clean training split.
    ridges : sequence of float
        Relative ridge penalties (:func:`mer_lib.models.refit.least_squares_layer`).
    heads : sequence of {None, "direct", "units"}
        ``None`` refits the model's own head; the others put that head of the swap on its backbone.

    Returns
    -------
    pandas.DataFrame
        One row per variant (in the order of ``model_dirs``, ``heads``, ``ridges``): ``system`` (the source's),
        ``seed``, ``head`` (``"own"``, ``"direct"``, ``"units"``), ``ridge``, ``label`` and ``model_dir``.
    """
    if not ridges:
        raise MerError("posthoc_heads: no ridge values")
    x, y, m = split_arrays(prepared, "train")
    data = {"train_x_sha256": artifacts.array_sha256(np.asarray(x, np.float32)),
            "train_targets_sha256": artifacts.array_sha256(np.concatenate([y, m], axis=1).astype(np.float32))}
    rows = []
    device = resolve_device(device)
    for (system, seed), source in model_dirs.items():
        source = Path(source)
        source_sha256 = artifacts.file_sha256(source / "model.pt")
        loaded = functools.cache(lambda source=source: load_model_dir(source, device)[0])
        for head in heads:
            for ridge in ridges:
                label = variant_label(system, float(ridge), head)
                key = {"source_model_sha256": source_sha256, "source_system": system, "seed": int(seed),
                       "head": head, "ridge": float(ridge), "data": data}
                out = RunLayout(run_dir).posthoc / _slug(label) / f"seed{seed}-{artifacts.config_hash(key)}"
                rows.append({"system": system, "seed": int(seed), "head": head or "own", "ridge": float(ridge),
                             "label": label, "model_dir": str(out)})
                config = artifacts.read_json(source / "config.json")
                config["config"] = {**config["config"], "system": HEAD_SYSTEMS.get(head, system)}
                MODELS.run(out, {**config, "posthoc": key}, _refit(source, loaded, head, key, (x, y, m), device))
    return pd.DataFrame(rows, columns=["system", "seed", "head", "ridge", "label", "model_dir"])


#: The ridges of the sweep: a decade either side of the quick profile's refit penalty (0.01). Fixed in advance.
SWEEP_RIDGES: tuple[float, ...] = (0.001, 0.01, 0.1)


def _own(model_dirs: Mapping[tuple[str, int], str | os.PathLike], ridge: float, systems: Sequence[str]) -> pd.DataFrame:
    """The trained models as rows of a variants table (their head refit at ``ridge`` in training)."""
    return pd.DataFrame([{"system": s, "seed": int(k), "head": "own", "ridge": float(ridge),
                          "label": variant_label(s, float(ridge)), "model_dir": str(d)}
                         for (s, k), d in model_dirs.items() if s in systems],
                        columns=["system", "seed", "head", "ridge", "label", "model_dir"])


def ridge_sweep(model_dirs: Mapping[tuple[str, int], str | os.PathLike], prepared, run_dir: str | os.PathLike,
                train: TrainConfig, ridges: Sequence[float] = SWEEP_RIDGES,
                device: str | torch.device | None = None) -> pd.DataFrame:
    """Every model with its own head refit at every ridge of the sweep (:func:`posthoc_heads` rows).

    At the ridge the profile refits with in training (``train.refit_head``), the trained models stand as they are.
    """
    trained = float(train.refit_ridge) if train.refit_head else None
    others = [r for r in ridges if trained is None or not math.isclose(float(r), trained)]
    parts = [posthoc_heads(model_dirs, prepared, run_dir, others, device=device)] if others else []
    if trained is not None and len(others) < len(ridges):
        parts.append(_own(model_dirs, trained, sorted({s for s, _ in model_dirs})))
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["ridge"], kind="stable").reset_index(drop=True)


def head_swap(model_dirs: Mapping[tuple[str, int], str | os.PathLike], prepared, run_dir: str | os.PathLike,
              train: TrainConfig, device: str | torch.device | None = None) -> pd.DataFrame:
    """A2E's and A2M2E's backbones, each under both heads, at the profile's ridge.

    Returns :func:`posthoc_heads` rows plus ``route`` (``"direct"`` or ``"units"``). If the profile refits heads in
    training, the trained A2E and A2M2E are their backbones' own routes; otherwise both routes are refit post hoc.
    """
    ridge = float(train.refit_ridge)
    a2e = {k: v for k, v in model_dirs.items() if k[0] == "A2E"}
    a2m2e = {k: v for k, v in model_dirs.items() if k[0] == "A2M2E"}
    if not a2e or not a2m2e:
        raise MerError("head_swap: needs trained A2E and A2M2E models")
    if train.refit_head:
        parts = [_own(a2e, ridge, ["A2E"]), posthoc_heads(a2e, prepared, run_dir, [ridge], ["units"], device),
                 _own(a2m2e, ridge, ["A2M2E"]), posthoc_heads(a2m2e, prepared, run_dir, [ridge], ["direct"], device)]
    else:
        parts = [posthoc_heads({**a2e, **a2m2e}, prepared, run_dir, [ridge], ["direct", "units"], device)]
    out = pd.concat(parts, ignore_index=True)
    own_route = out["system"].map({"A2E": "direct", "A2M2E": "units"})
    out["route"] = out["head"].where(out["head"] != "own", own_route)
    return out
