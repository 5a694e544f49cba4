"""Regression checks with seed-spread tolerances: pass on another draw, fail when the science breaks."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from mer_lib import regression
from mer_lib.errors import MerError


def draw(seed: int, shift: float = 0.0, n: int = 6) -> pd.DataFrame:
    """Per-model values of two systems: A around 0.5 (sd 0.1), B around 0.2 (sd 0.05)."""
    rng = np.random.default_rng(seed)
    rows = [{"system": s, "seed": i, "dmae": mu + shift + sd * rng.standard_normal(), "r": 0.7}
            for s, mu, sd in (("A", 0.5, 0.1), ("B", 0.2, 0.05)) for i in range(n)]
    return pd.DataFrame(rows)


@pytest.fixture()
def expectations(tmp_path):
    runs = []
    for i in range(2):
        run = tmp_path / f"draw{i}"
        regression.check_models(draw(100 + i), ["dmae", "r"], "quick", "05_attacks", run, show=False,
                                expectations={})
        runs.append(run)
    return regression.derive_expectations(runs, "quick", ["default kernels", "avx2"])


def test_tolerance_formula():
    assert regression.tolerance(0.1, 6, 12, k=4) == pytest.approx(4 * 0.1 * math.sqrt(1 / 6 + 1 / 12))
    assert regression.tolerance(0.0, 3, 3) > 0  # floor: an exactly reproducible quantity still compares
    with pytest.raises(MerError):
        regression.tolerance(0.1, 0, 3)


def test_derive_pools_the_draws(expectations):
    sec = expectations["sections"]["05_attacks"]
    assert set(sec) == {"dmae | A", "dmae | B", "r | A", "r | B"}
    assert sec["dmae | A"]["n"] == 12 and len(sec["dmae | A"]["draw_means"]) == 2
    # positive quantities are pooled on the log scale: a per-model SD of 0.1 around 0.5 is about 0.2 in logs
    assert sec["dmae | A"]["scale"] == "log" and 0.1 < sec["dmae | A"]["sd"] < 0.4
    assert sec["dmae | A"]["mean"] == pytest.approx(math.log(0.5), abs=0.15)
    assert sec["r | A"]["sd"] == pytest.approx(0.0, abs=1e-12)
    assert expectations["draws"] == ["default kernels", "avx2"]


def test_another_draw_passes(expectations, monkeypatch, capsys):
    monkeypatch.setenv(regression.STRICT_ENV, "1")
    for seed in range(20):  # twenty further independent draws all pass
        table = regression.check_models(draw(seed), ["dmae", "r"], "quick", "05_attacks",
                                        expectations=expectations)
        assert table["ok"].all()
    out = capsys.readouterr().out
    assert "dmae [A]" in out and "expected" in out and "all within tolerance" in out


def test_a_broken_quantity_fails_loudly(expectations, monkeypatch):
    broken = draw(7)
    broken.loc[broken["system"] == "A", "dmae"] *= 0.3  # e.g. the attack's step size x 0.1
    monkeypatch.delenv(regression.STRICT_ENV, raising=False)
    table = regression.check_models(broken, ["dmae", "r"], "quick", "05_attacks", expectations=expectations,
                                    show=False)
    assert table.set_index(["quantity", "group"]).loc[("dmae", "A"), "ok"] == False  # noqa: E712
    monkeypatch.setenv(regression.STRICT_ENV, "1")
    with pytest.raises(regression.RegressionFailure, match=r"dmae \[A\]"):
        regression.check_models(broken, ["dmae", "r"], "quick", "05_attacks", expectations=expectations)


def test_missing_expectation_fails_in_strict_mode_only(expectations, monkeypatch):
    df = draw(3).assign(new_quantity=1.0)
    monkeypatch.setenv(regression.STRICT_ENV, "0")
    table = regression.check_models(df, ["new_quantity"], "quick", "05_attacks", expectations=expectations,
                                    show=False)
    assert table["ok"].isna().all()
    monkeypatch.setenv(regression.STRICT_ENV, "1")
    with pytest.raises(regression.RegressionFailure, match="no expectation recorded"):
        regression.check_models(df, ["new_quantity"], "quick", "05_attacks", expectations=expectations,
                                show=False)


def test_profile_without_expectations_only_shows(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(regression.STRICT_ENV, "1")
    table = regression.check_models(draw(1), ["dmae"], "no-such-profile", "05_attacks", tmp_path)
    assert table["ok"].isna().all()
    assert "no expectations recorded" in capsys.readouterr().out
    written = pd.read_csv(tmp_path / "regression" / "05_attacks.csv")
    assert list(written.columns) == ["system", "seed", "quantity", "value"] and len(written) == 12


def test_input_errors(tmp_path):
    with pytest.raises(MerError, match="missing"):
        regression.check_models(draw(1), ["nope"], "quick", "x", expectations={}, show=False)
    doubled = pd.concat([draw(1), draw(1)])
    with pytest.raises(MerError, match="more than once"):
        regression.check_models(doubled, ["dmae"], "quick", "x", expectations={}, show=False)
    with pytest.raises(MerError, match="no regression"):
        regression.derive_expectations([tmp_path], "quick")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MerError, match="bad.json"):
        regression.load_expectations("bad", tmp_path)


def test_cli_derive_refuses_to_overwrite(expectations, tmp_path):
    out = tmp_path / "quick.json"
    out.write_text(json.dumps(expectations))
    assert regression.main(["derive", "--profile", "quick", str(tmp_path / "draw0"), "--out", str(out)]) == 2
    assert regression.main(["derive", "--profile", "quick", str(tmp_path / "draw0"), "--out", str(out),
                            "--force"]) == 0
    assert json.loads(out.read_text())["sections"]["05_attacks"]["dmae | A"]["n"] == 6


def test_shipped_expectations_are_valid():
    for path in regression.EXPECTATIONS_DIR.glob("*.json"):
        doc = regression.load_expectations(path.stem)
        assert doc["profile"] == path.stem and len(doc["draws"]) >= 2
        for section in doc["sections"].values():
            for ref in section.values():
                assert ref["n"] >= 2 and ref["sd"] >= 0 and math.isfinite(ref["mean"])


def test_log_scale_checks_never_admit_zero(expectations, monkeypatch):
    """An attack switched off (dMAE 0) or a gain x10 (dMAE x10) fails; a linear check of the same spread would not."""
    monkeypatch.delenv(regression.STRICT_ENV, raising=False)
    for factor in (0.0, 1e-3, 10.0):
        broken = draw(8)
        broken["dmae"] *= factor
        table = regression.check_models(broken, ["dmae"], "quick", "05_attacks", expectations=expectations,
                                        show=False).set_index("group")
        assert not table["ok"].any() and (table["scale"] == "log").all()
    ref = expectations["sections"]["05_attacks"]["dmae | B"]
    assert not regression.admits_zero(ref, 5)
    wide = {"mean": 0.2, "sd": 0.3, "n": 10, "scale": "linear"}  # a linear tolerance wider than the mean
    assert regression.admits_zero(wide, 5)


def test_a_quantity_declared_signed_stays_linear_though_every_draw_was_positive(tmp_path):
    """A recovered share can be negative on another CPU: a log-scale check would call any such mean zero."""
    run = tmp_path / "draw"
    df = pd.DataFrame({"system": "A", "seed": range(6), "recovery": [0.2, 0.3, 0.25, 0.1, 0.35, 0.3]})
    regression.check_models(df, ["recovery"], "quick", "11_recovery", run, show=False, expectations={})
    ref = regression.derive_expectations([run, run], "quick", signed=["recovery"])["sections"]["11_recovery"]
    assert ref["recovery | A"]["scale"] == "linear" and ref["recovery | A"]["signed"]
    assert regression.derive_expectations([run, run], "quick")["sections"]["11_recovery"]["recovery | A"]["scale"] == "log"
    other = df.assign(recovery=[0.3, 0.25, -0.02, 0.2, 0.3, 0.35])  # one model below zero, the mean in range
    table = regression.check_models(other, ["recovery"], "quick", "11_recovery", show=False,
                                    expectations={"sections": {"11_recovery": ref}})
    assert table["ok"].all()


def test_quantities_that_cross_zero_stay_linear(tmp_path):
    run = tmp_path / "draw"
    df = pd.DataFrame({"system": "A", "seed": range(6), "dmae": [-0.01, 0.02, 0.0, 0.01, -0.02, 0.03]})
    regression.check_models(df, ["dmae"], "quick", "09_noise", run, show=False, expectations={})
    ref = regression.derive_expectations([run, run], "quick")["sections"]["09_noise"]["dmae | A"]
    assert ref["scale"] == "linear" and ref["mean"] == pytest.approx(df["dmae"].mean())
    table = regression.check_models(df, ["dmae"], "quick", "09_noise", show=False,
                                    expectations={"sections": {"09_noise": {"dmae | A": ref}}})
    assert table["ok"].all()


def test_no_shipped_expectation_admits_zero():
    """No check passes a run whose values are all zero, at the number of models a run checks (5 where the file
    predates that record): a check that admits zero cannot catch a broken stage. Quantities that are 0 by result
    (e.g. a probe of a cue no model uses) are checked through a positive control instead."""
    for path in regression.EXPECTATIONS_DIR.glob("*.json"):
        doc = regression.load_expectations(path.stem)
        for name, section in doc["sections"].items():
            for key, ref in section.items():
                assert "min" in ref and "scale" in ref, f"{path.name}: {name} / {key} predates log-scale checks"
                n = ref.get("n_per_draw", 5)
                assert not regression.admits_zero(ref, n), f"{path.name}: {name} / {key} admits zero at {n} models"


def test_cli_merge_adds_only_the_selected_sections(expectations, tmp_path):
    """--sections picks a notebook's sections; --merge keeps the file's others and refuses other draws."""
    for i in range(2):
        regression.check_models(draw(200 + i), ["dmae"], "quick", "10_cue", tmp_path / f"draw{i}", show=False,
                                expectations={})
    out = tmp_path / "quick.json"
    out.write_text(json.dumps({**expectations, "sections": {**expectations["sections"], "10_stale": {}}}))
    runs = [str(tmp_path / "draw0"), str(tmp_path / "draw1")]
    labels = ["--label", "default kernels", "--label", "avx2"]
    assert regression.main(["derive", "--profile", "quick", *runs, *labels, "--sections", "10_*", "--merge",
                            "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["sections"]["05_attacks"] == expectations["sections"]["05_attacks"]
    assert set(doc["sections"]) == {"05_attacks", "10_cue"} and doc["merged"][0]["sections"] == ["10_cue"]
    assert doc["sections"]["10_cue"]["dmae | A"]["n"] == 12
    other = ["--label", "seeds 1", "--label", "seeds 2"]
    assert regression.main(["derive", "--profile", "quick", *runs, *other, "--sections", "10_*", "--merge",
                            "--out", str(out)]) == 2
    assert regression.main(["derive", "--profile", "quick", *runs, "--sections", "11_*", "--merge",
                            "--out", str(out)]) == 2
