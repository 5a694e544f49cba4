"""Robustness over budgets: the waveform attack's SNR curves and sanity checks, and the spectrogram's eps budgets.

Pure analysis of the tables of :mod:`mer_lib.attacks.waveform_stage` (``results``: a row per model, excerpt, kind
and SNR; ``transfer``: a row per source model, target model and excerpt). As in :mod:`mer_lib.analysis.stats` the
model is the unit: its value is the mean over its excerpts, CIs are over models (bootstrap for a median, t for a
mean, NaN for one model), and paired comparisons pair one model's values. The sanity checks follow Carlini et
al. (2019), *On evaluating adversarial robustness*.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from mer_lib.analysis.stats import (
    DEFAULT_PAIRS,
    interval_over_models,
    stat_function,
    system_contrasts,
    t_interval,
    verdict,
)
from mer_lib.attacks.logs import MODEL_KEYS, require_columns, system_order
from mer_lib.errors import MerError

#: Columns a table of waveform results needs.
RESULT_COLUMNS: tuple[str, ...] = ("system", "seed", "number", "kind", "snr_db", "dmae")

#: Columns a transfer table needs.
TRANSFER_COLUMNS: tuple[str, ...] = ("source_system", "source_seed", "target_system", "target_seed", "number",
                                     "snr_db", "dmae")

_NAN = float("nan")


def _order(df: pd.DataFrame, system: str, extra: Sequence[str]) -> pd.DataFrame:
    """Rows sorted by system (the paper's order), then by ``extra``."""
    rank = {s: i for i, s in enumerate(system_order(df[system]))}
    return df.assign(_rank=df[system].map(rank)).sort_values(["_rank", *extra]).drop(columns="_rank") \
        .reset_index(drop=True)


# --------------------------------------------------------------------------- curves
def per_model_curves(results: pd.DataFrame) -> pd.DataFrame:
    """Per model, kind and SNR: means over the attacked excerpts.

    Parameters
    ----------
    results : pandas.DataFrame
        The ``results`` table of :func:`mer_lib.attacks.waveform_stage.waveform_many`.

    Returns
    -------
    pandas.DataFrame
        ``system, seed, kind, snr_db, n_excerpts, dmae, pred_change`` (means), the medians ``achieved_snr_db,
        linf, loudness_lu`` where present; paper order, SNR from high (small budget) to low.

    Raises
    ------
    MerError
        On missing columns or a repeated (system, seed, kind, SNR, excerpt).
    """
    require_columns(results, RESULT_COLUMNS, "waveform results")
    keys = [*MODEL_KEYS, "kind", "snr_db"]
    if results.duplicated(subset=[*keys, "number"]).any():
        raise MerError("waveform results: a (system, seed, kind, snr_db, number) appears more than once")
    spec = {"n_excerpts": ("number", "size"), "dmae": ("dmae", "mean")}
    if "pred_change" in results:
        spec["pred_change"] = ("pred_change", "mean")
    for col in ("achieved_snr_db", "linf", "loudness_lu"):
        if col in results:
            spec[col] = (col, "median")
    out = results.groupby(keys, sort=False).agg(**spec).reset_index()
    return _order(out.assign(_neg=-out["snr_db"]), "system", ["seed", "kind", "_neg"]).drop(columns="_neg")


def robustness_curves(per_model: pd.DataFrame, quantity: str = "dmae", stat: str = "median",
                      n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Damage against SNR per system and kind, with CIs over its models.

    Parameters
    ----------
    per_model : pandas.DataFrame
        :func:`per_model_curves` output (or a ``results`` table, summarised first).
    quantity : str
        ``"dmae"`` or ``"pred_change"``.

    Returns
    -------
    pandas.DataFrame
        ``system, kind, snr_db, n_models, estimate, ci_low, ci_high``; paper order, SNR from high to low.
    """
    pm = per_model_curves(per_model) if "number" in per_model.columns else per_model
    require_columns(pm, [*MODEL_KEYS, "kind", "snr_db", quantity], "per-model curves")
    func = stat_function(stat, "robustness_curves")
    rows = []
    for (system, kind, snr), g in pm.groupby(["system", "kind", "snr_db"], sort=False):
        values = g[quantity].to_numpy(np.float64)
        lo, hi = interval_over_models(values, stat, n_boot, seed, level)
        rows.append({"system": system, "kind": kind, "snr_db": float(snr), "n_models": len(values),
                     "estimate": float(func(values)), "ci_low": lo, "ci_high": hi})
    out = pd.DataFrame(rows)
    return _order(out.assign(_neg=-out["snr_db"]), "system", ["kind", "_neg"]).drop(columns="_neg")


def _paired(pm: pd.DataFrame, quantity: str, a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Values of the models in both selections, paired by (system, seed)."""
    left = pm[a].set_index(list(MODEL_KEYS))[quantity]
    right = pm[b].set_index(list(MODEL_KEYS))[quantity]
    both = left.index.intersection(right.index)
    return left.loc[both].to_numpy(np.float64), right.loc[both].to_numpy(np.float64)


def _paired_row(diff: np.ndarray, n_boot: int, seed: int, level: float) -> dict:
    estimate = float(np.mean(diff)) if diff.size else _NAN
    lo, hi = interval_over_models(diff, "mean", n_boot, seed, level)
    return {"n_models": int(diff.size), "estimate": estimate, "ci_low": lo, "ci_high": hi,
            "verdict": verdict(lo, hi, 1, estimate)}


def monotonicity(per_model: pd.DataFrame, kind: str = "attack", quantity: str = "dmae", n_boot: int = 10_000,
                 seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Does the damage grow with the budget? Every step between neighbouring SNRs of one ``kind``, per system.

    Per step (``snr_from`` > ``snr_to``: a larger budget), the per-model increase of ``quantity``: mean over models,
    t-interval and verdict (*holds*: the damage grows). ``per_model`` as for :func:`robustness_curves`.

    Returns
    -------
    pandas.DataFrame
        ``system, kind, snr_from, snr_to, n_models, estimate, ci_low, ci_high, verdict, models_increasing``
        (models whose own value grew), ``increases`` (positive estimate).
    """
    pm = per_model_curves(per_model) if "number" in per_model.columns else per_model
    require_columns(pm, [*MODEL_KEYS, "kind", "snr_db", quantity], "per-model curves")
    pm = pm[pm["kind"] == kind]
    if pm.empty:
        raise MerError(f"monotonicity: no rows of kind {kind!r}")
    rows = []
    for system in system_order(pm["system"]):
        g = pm[pm["system"] == system]
        snrs = sorted(g["snr_db"].unique(), reverse=True)
        for hi_snr, lo_snr in itertools.pairwise(snrs):
            weak, strong = _paired(g, quantity, g["snr_db"] == hi_snr, g["snr_db"] == lo_snr)
            diff = strong - weak
            rows.append({"system": system, "kind": kind, "snr_from": float(hi_snr), "snr_to": float(lo_snr),
                         **_paired_row(diff, n_boot, seed, level), "models_increasing": int((diff > 0).sum()),
                         "increases": bool(diff.size and np.mean(diff) > 0)})
    return pd.DataFrame(rows)


def attack_vs_noise(per_model: pd.DataFrame, noise: str = "white", quantity: str = "dmae",
                    ratio_quantity: str = "pred_change", n_boot: int = 10_000, seed: int = 0,
                    level: float = 0.95) -> pd.DataFrame:
    """Is the attack stronger than ``noise`` (``"white"``, ``"pink"``) of the same SNR? Per system and SNR, by model.

    Two measures: ``quantity(attack) - quantity(noise)`` (mean, t-interval, *holds* if the attack does more damage)
    and the per-model ratio of ``ratio_quantity`` (median, bootstrap CI): the prediction change by default, as it is
    positive where noise can lower the MAE by chance.

    Returns
    -------
    pandas.DataFrame
        ``system, snr_db, noise, n_models, attack, noise_value, estimate, ci_low, ci_high, verdict, ratio,
        ratio_ci_low, ratio_ci_high``.
    """
    pm = per_model_curves(per_model) if "number" in per_model.columns else per_model
    require_columns(pm, [*MODEL_KEYS, "kind", "snr_db", quantity, ratio_quantity], "per-model curves")
    if not (pm["kind"] == noise).any():
        raise MerError(f"attack_vs_noise: no rows of kind {noise!r}; found {sorted(pm['kind'].unique())}")
    rows = []
    for (system, snr), g in pm.groupby(["system", "snr_db"], sort=False):
        att, noi = _paired(g, quantity, g["kind"] == "attack", g["kind"] == noise)
        r_att, r_noi = _paired(g, ratio_quantity, g["kind"] == "attack", g["kind"] == noise)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = r_att / r_noi
        finite = ratio[np.isfinite(ratio)]
        r_lo, r_hi = interval_over_models(finite, "median", n_boot, seed, level)
        rows.append({"system": system, "snr_db": float(snr), "noise": noise,
                     "attack": float(np.mean(att)) if att.size else _NAN,
                     "noise_value": float(np.mean(noi)) if noi.size else _NAN,
                     **_paired_row(att - noi, n_boot, seed, level),
                     "ratio": float(np.median(finite)) if finite.size else _NAN,
                     "ratio_ci_low": r_lo, "ratio_ci_high": r_hi})
    out = pd.DataFrame(rows)
    columns = ["system", "snr_db", "noise", "n_models", "attack", "noise_value", "estimate", "ci_low", "ci_high",
               "verdict", "ratio", "ratio_ci_low", "ratio_ci_high"]
    return _order(out.assign(_neg=-out["snr_db"]), "system", ["_neg"])[columns]


# --------------------------------------------------------------------------- transfer
def _transfer_per_pair(transfer: pd.DataFrame, snr_db: float | None) -> pd.DataFrame:
    """Mean over excerpts per (source model, target model) at one SNR."""
    require_columns(transfer, TRANSFER_COLUMNS, "transfer table")
    snrs = sorted(transfer["snr_db"].unique())
    if snr_db is None:
        if len(snrs) != 1:
            raise MerError(f"transfer table: several SNRs {snrs}; pass snr_db")
        snr_db = snrs[0]
    t = transfer[transfer["snr_db"] == float(snr_db)]
    if t.empty:
        raise MerError(f"transfer table: no rows at snr_db {snr_db}; found {snrs}")
    keys = ["source_system", "source_seed", "target_system", "target_seed"]
    return t.groupby(keys, sort=False)["dmae"].mean().reset_index()


def transfer_summary(transfer: pd.DataFrame, snr_db: float | None = None, stat: str = "median",
                     n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Damage of adversaries made on one system and fed to another, per (source, target) system.

    Parameters
    ----------
    transfer : pandas.DataFrame
        The ``transfer`` table of :func:`mer_lib.attacks.waveform_stage.waveform_many`.
    snr_db : float, optional
        Needed if the table holds several SNRs.

    Returns
    -------
    pandas.DataFrame
        ``source_system, target_system, white_box`` (source = target), ``n_models, estimate, ci_low, ci_high``
        (``stat`` over the model pairs, one per seed).
    """
    pairs = _transfer_per_pair(transfer, snr_db)
    func = stat_function(stat, "transfer_summary")
    rows = []
    for (src, tgt), g in pairs.groupby(["source_system", "target_system"], sort=False):
        values = g["dmae"].to_numpy(np.float64)
        lo, hi = interval_over_models(values, stat, n_boot, seed, level)
        rows.append({"source_system": src, "target_system": tgt, "white_box": src == tgt,
                     "n_models": len(values), "estimate": float(func(values)), "ci_low": lo, "ci_high": hi})
    out = pd.DataFrame(rows)
    rank = {s: i for i, s in enumerate(system_order(out["target_system"]))}
    return _order(out.assign(_t=out["target_system"].map(rank)), "source_system", ["_t"]).drop(columns="_t")


def transfer_matrix(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`transfer_summary` as a matrix: rows are source systems, columns target systems."""
    require_columns(summary, ["source_system", "target_system", "estimate"], "transfer summary")
    matrix = summary.pivot(index="source_system", columns="target_system", values="estimate")
    return matrix.loc[system_order(summary["source_system"]), system_order(summary["target_system"])]


def gradient_masking_check(transfer: pd.DataFrame, snr_db: float | None = None, stat: str = "median",
                           n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Per target system: its white-box damage against the strongest transferred one, a check for gradient masking.

    The strongest source is the other system whose adversaries hurt the target most. The per-seed difference gets a
    t-interval and a verdict: *holds* if the white-box attack is stronger, as it should be; *contradicted* hints at
    gradient masking.

    Returns
    -------
    pandas.DataFrame
        ``target_system, white_box, best_source, transferred, n_models, estimate, ci_low, ci_high, verdict,
        masking_suspected`` (the estimate is not positive).
    """
    pairs = _transfer_per_pair(transfer, snr_db)
    func = stat_function(stat, "gradient_masking_check")
    rows = []
    for target in system_order(pairs["target_system"]):
        g = pairs[pairs["target_system"] == target]
        own = g[g["source_system"] == target].set_index("target_seed")["dmae"]
        others = g[g["source_system"] != target]
        if own.empty or others.empty:
            continue
        strength = others.groupby("source_system")["dmae"].apply(lambda v: float(func(v.to_numpy())))
        best = str(strength.idxmax())
        moved = others[others["source_system"] == best].set_index("target_seed")["dmae"]
        seeds = own.index.intersection(moved.index)
        diff = own.loc[seeds].to_numpy(np.float64) - moved.loc[seeds].to_numpy(np.float64)
        row = _paired_row(diff, n_boot, seed, level)
        rows.append({"target_system": target, "white_box": float(func(own.to_numpy())), "best_source": best,
                     "transferred": float(strength[best]), **row,
                     "masking_suspected": bool(not row["estimate"] > 0)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the two domains
def _system_values(per_model: pd.DataFrame, quantity: str, func: Callable, where: str) -> pd.Series:
    require_columns(per_model, [*MODEL_KEYS, quantity], where)
    if per_model.duplicated(subset=list(MODEL_KEYS)).any():
        raise MerError(f"{where}: a (system, seed) appears more than once; select one SNR and kind first")
    grouped = per_model.groupby("system")[quantity].apply(lambda v: float(func(v.to_numpy(np.float64))))
    return grouped.loc[system_order(per_model["system"])]


def domain_ranking(waveform: pd.DataFrame, spectrogram: pd.DataFrame, quantity: str = "dmae",
                   stat: str = "median") -> pd.DataFrame:
    """The systems ranked by damage in the waveform and in the spectrogram domain, side by side.

    Parameters
    ----------
    waveform, spectrogram : pandas.DataFrame
        One row per model (``system, seed, <quantity>``), e.g. :func:`per_model_curves` attack rows at one SNR and
        :func:`mer_lib.attacks.logs.per_model_metrics`.

    Returns
    -------
    pandas.DataFrame
        ``system, waveform, waveform_rank, spectrogram, spectrogram_rank, rank_change`` (rank 1: least damage);
        :func:`ranking_agreement` summarises it.
    """
    func = stat_function(stat, "domain_ranking")
    wave = _system_values(waveform, quantity, func, "waveform per-model table")
    spec = _system_values(spectrogram, quantity, func, "spectrogram per-model table")
    systems = [s for s in wave.index if s in spec.index]
    if len(systems) < 2:
        raise MerError(f"domain_ranking: fewer than 2 systems in both tables ({systems})")
    out = pd.DataFrame({"system": systems, "waveform": wave.loc[systems].to_numpy(),
                        "spectrogram": spec.loc[systems].to_numpy()})
    out["waveform_rank"] = out["waveform"].rank(method="min").astype(int)
    out["spectrogram_rank"] = out["spectrogram"].rank(method="min").astype(int)
    out["rank_change"] = out["waveform_rank"] - out["spectrogram_rank"]
    return out[["system", "waveform", "waveform_rank", "spectrogram", "spectrogram_rank", "rank_change"]]


def ranking_agreement(ranking: pd.DataFrame) -> pd.Series:
    """How far the two domains of a :func:`domain_ranking` agree: ``kendall_tau`` and ``same_order``."""
    require_columns(ranking, ["waveform", "spectrogram", "rank_change"], "ranking_agreement")
    return pd.Series({"kendall_tau": float(sps.kendalltau(ranking["waveform"], ranking["spectrogram"]).statistic),
                      "same_order": bool((ranking["rank_change"] == 0).all())})


def domain_contrasts(waveform: pd.DataFrame, spectrogram: pd.DataFrame,
                     pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS, quantity: str = "dmae",
                     stat: str = "median", n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """:func:`mer_lib.analysis.stats.system_contrasts` per domain (``domain`` first); > 0: the second is hurt less."""
    parts = [system_contrasts(table, pairs, quantity, stat, n_boot, seed, level).assign(domain=name)
             for name, table in (("waveform", waveform), ("spectrogram", spectrogram))]
    out = pd.concat(parts, ignore_index=True)
    return out[["domain", *[c for c in out.columns if c != "domain"]]]


# --------------------------------------------------------------------------- tables for checks and summaries
def snr_table(per_model: pd.DataFrame, kind: str = "attack", quantity: str = "dmae") -> pd.DataFrame:
    """One row per model, one column ``<quantity>_<snr>dB`` per SNR of one ``kind``: the shape
    :func:`mer_lib.regression.check_models` checks.

    Raises ``MerError`` on missing columns or an absent ``kind``.
    """
    require_columns(per_model, [*MODEL_KEYS, "kind", "snr_db", quantity], "waveform per-model table")
    sub = per_model[per_model["kind"] == kind]
    if sub.empty:
        raise MerError(f"snr_table: no rows of kind {kind!r}; kinds present: {sorted(per_model['kind'].unique())}")
    wide = sub.pivot_table(index=list(MODEL_KEYS), columns="snr_db", values=quantity, sort=False)
    wide = wide[sorted(wide.columns, reverse=True)]
    wide.columns = [f"{quantity}_{snr:g}dB" for snr in wide.columns]
    return _order(wide.reset_index(), "system", ["seed"])


def roundtrip_summary(roundtrip: pd.DataFrame) -> pd.DataFrame:
    """How much of the waveform attack survives writing the audio as a 16-bit WAV, per system.

    Returns
    -------
    pandas.DataFrame
        From the ``roundtrip`` table of :func:`mer_lib.attacks.waveform_stage.waveform_many`: ``n`` excerpts,
        ``snr_db``, median ``dmae_attack`` and ``dmae_roundtrip``, median and minimum ``survival`` (round-trip over
        attack dMAE), ``peak_preserved`` (share of files whose peak stayed, so madmom's normalisation did not rescale
        them) and the largest ``max_error_int16``.
    """
    require_columns(roundtrip, [*MODEL_KEYS, "number", "snr_db", "dmae_attack", "dmae_roundtrip", "survival",
                                "peak_preserved", "max_error_int16"], "round-trip table")
    out = roundtrip.groupby("system", sort=False).agg(
        n=("number", "size"), snr_db=("snr_db", "first"), dmae_attack=("dmae_attack", "median"),
        dmae_roundtrip=("dmae_roundtrip", "median"), survival=("survival", "median"),
        survival_min=("survival", "min"), peak_preserved=("peak_preserved", "mean"),
        max_error_int16=("max_error_int16", "max")).reset_index()
    return _order(out, "system", [])


# --------------------------------------------------------------------------- budgets at a fixed damage
#: Relative damage (dMAE / clean prediction spread) at which :func:`budget_for_damage` reads budgets (protocol §7).
RELATIVE_DAMAGE = 0.5


def budget_for_damage(sweep: pd.DataFrame, level: float = RELATIVE_DAMAGE, quantity: str = "dmae_rel",
                      budget: str = "eps") -> pd.DataFrame:
    """Per model: the smallest budget at which ``quantity`` reaches ``level``, interpolated in log budget (protocol §7).

    Parameters
    ----------
    sweep : pandas.DataFrame
        Per-model damage at several budgets (:func:`mer_lib.attacks.stage.bounded_sweep`).

    Returns
    -------
    pandas.DataFrame
        ``system``, ``seed``, ``budget`` (larger is more robust; ``inf`` if never reached), ``reached``,
        ``at_smallest`` (the smallest budget already reaches ``level``; ``budget`` is then that budget, an upper bound).
    """
    require_columns(sweep, [*MODEL_KEYS, budget, quantity], "budget_for_damage")
    if not (level > 0):
        raise MerError(f"budget_for_damage: level must be positive, got {level!r}")
    rows = []
    for (system, seed), g in sweep.groupby(list(MODEL_KEYS), sort=False):
        g = g.sort_values(budget)
        b, d = g[budget].to_numpy(np.float64), g[quantity].to_numpy(np.float64)
        above = np.flatnonzero(d >= level)
        if above.size == 0:
            value = math.inf
        elif above[0] == 0:
            value = float(b[0])
        else:
            i = above[0]
            frac = (level - d[i - 1]) / (d[i] - d[i - 1])
            value = float(np.exp(np.log(b[i - 1]) + frac * (np.log(b[i]) - np.log(b[i - 1]))))
        rows.append({"system": system, "seed": seed, "budget": value, "reached": bool(above.size),
                     "at_smallest": bool(above.size) and above[0] == 0})
    return _order(pd.DataFrame(rows), "system", ["seed"])


def plateau_summary(plateau: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per norm and eps: how much more damage twice the steps did (:func:`mer_lib.attacks.stage.plateau_check`).

    Returns
    -------
    pandas.DataFrame
        ``norm``, ``eps``, ``models`` and, for ``dmae`` and ``dmae_rel``, the mean ratio (more steps / the sweep's)
        with its t-interval (``*_ratio``, ``*_ci_low``, ``*_ci_high``); near 1: the damage had plateaued.
    """
    require_columns(plateau, ["norm", "eps", "dmae_ratio", "dmae_rel_ratio"], "plateau_summary")
    rows = []
    for (norm, eps), g in plateau.groupby(["norm", "eps"], sort=False):
        row = {"norm": norm, "eps": eps, "models": len(g)}
        for q in ("dmae", "dmae_rel"):
            values = g[f"{q}_ratio"].to_numpy(np.float64)
            low, high = t_interval(values, level)
            row.update({f"{q}_ratio": float(values.mean()), f"{q}_ci_low": low, f"{q}_ci_high": high})
        rows.append(row)
    return pd.DataFrame(rows)
