"""Reading and writing attack logs in the published format."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mer_lib.attacks.logs import (
    parse_array,
    read_attack_log,
    read_published_runs,
    tidy_columns,
    to_published_format,
    write_attack_log,
)
from mer_lib.errors import MerError


def test_every_published_log_parses_without_loss(published_runs):
    runs = pd.read_csv(published_runs / "runs.csv")
    assert len(runs) == 50
    for run_dir in runs["run_dir"]:
        path = published_runs / run_dir / "log.csv"
        tidy = read_attack_log(path)
        assert len(tidy) == 36 and tidy[tidy_columns("new")].notna().all().all()
        # re-encoding every value gives back the published text exactly (no loss)
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        again = to_published_format(tidy)
        for col in ("file", "epoch", "converged", "true-label", "orig-pred", "new-pred"):
            assert again[col].tolist() == raw[col].tolist(), (path, col)
        np.testing.assert_array_equal(again["norm"].astype(float), raw["norm"].astype(float))
        np.testing.assert_array_equal(again["adv-target"].astype(float), raw["adv-target"].astype(float))
        np.testing.assert_array_equal(again["db"].astype(np.float32), raw["db"].astype(np.float32))


def test_published_runs_table(published_runs):
    allruns = read_published_runs(published_runs)
    assert len(allruns) == 50 * 36
    assert sorted(allruns["system"].unique()) == ["A2B2E", "A2E", "A2M2E", "aA2B2E", "aA2E"]
    assert allruns.groupby("system")["seed"].nunique().eq(10).all()


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    tidy = pd.DataFrame({"number": [146, 7], "iterations": [1000, 17], "db_reference": [45.08792, 3.5],
                         "norm": [3.8861193656921387, 0.0], "converged": [False, True],
                         "adv_target": [0.8, -0.9999999999999998]})
    for prefix in ("true", "orig", "new"):
        values = rng.random((2, 8))
        values = np.round(values, 5) if prefix == "true" else values.astype(np.float32).astype(np.float64)
        tidy[tidy_columns(prefix)] = values
    write_attack_log(tidy, tmp_path / "log.csv")
    back = read_attack_log(tmp_path / "log.csv")
    pd.testing.assert_frame_equal(back, tidy[back.columns], check_dtype=False)


def test_bad_logs_name_file_row_and_column(tmp_path):
    bad = tmp_path / "log.csv"
    bad.write_text("file,epoch,db,norm,converged,true-label,orig-pred,new-pred,adv-target\n"
                   "['1.mp3.spec'],10,1.0,2.0,False,[[1 2 3]],[[1 2 3 4 5 6 7 8]],[[1 2 3 4 5 6 7 8]],0.5\n")
    with pytest.raises(MerError, match=r"log.csv, row 2, column 'true-label'"):
        read_attack_log(bad)
    bad.write_text("file,epoch\n['1.mp3.spec'],10\n")
    with pytest.raises(MerError, match="missing columns"):
        read_attack_log(bad)
    with pytest.raises(MerError, match="8 numbers"):
        parse_array("[[0.1 x 0.3]]")
