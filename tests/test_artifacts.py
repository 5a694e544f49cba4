"""Atomic writes, canonical JSON, pickle-free ``.npy`` and configuration hashes."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mer_lib import artifacts
from mer_lib.config import get_profile
from mer_lib.errors import MerError


def leftovers(folder: Path) -> list[str]:
    """Temporary files (``.<name>.*.tmp``) left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- atomic writes
def test_write_bytes_and_text_create_parents_and_leave_no_temp_file(tmp_path):
    path = artifacts.write_bytes(tmp_path / "a" / "b" / "blob.bin", b"\x00\x01")
    assert path == tmp_path / "a" / "b" / "blob.bin" and path.read_bytes() == b"\x00\x01"
    text = artifacts.write_text(tmp_path / "a" / "b" / "note.txt", "r ± std\n")
    assert text.read_bytes() == "r ± std\n".encode("utf-8")
    assert leftovers(tmp_path / "a" / "b") == []


def test_write_replaces_an_existing_file(tmp_path):
    path = tmp_path / "x.txt"
    artifacts.write_text(path, "old, longer text")
    artifacts.write_text(path, "new")
    assert path.read_text() == "new" and leftovers(tmp_path) == []


def test_written_files_get_the_usual_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        path = artifacts.write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_atomic_path_failure_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("finished")
    with pytest.raises(RuntimeError, match="interrupted"):
        with artifacts.atomic_path(path) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".result.json.") and tmp.name.endswith(".tmp")
            tmp.write_text("half-writ")
            raise RuntimeError("interrupted")
    assert path.read_text() == "finished" and leftovers(tmp_path) == []


def test_atomic_path_renames_into_place(tmp_path):
    path = tmp_path / "out" / "data.bin"
    with artifacts.atomic_path(path) as tmp:
        tmp.write_bytes(b"payload")
        assert not path.exists()
    assert path.read_bytes() == b"payload" and leftovers(path.parent) == []


# --------------------------------------------------------------------------- JSON
@dataclasses.dataclass(frozen=True)
class _Cfg:
    name: str
    values: tuple[float, ...]


def test_to_jsonable_converts_numpy_paths_tuples_and_dataclasses():
    obj = {1: np.float32(0.5), "a": (np.int64(3), [np.bool_(True)]), "arr": np.arange(3).reshape(1, 3),
           "path": Path("/tmp/x"), "cfg": _Cfg("c", (1.0, 2.0)), "none": None}
    out = artifacts.to_jsonable(obj)
    assert out == {"1": 0.5, "a": [3, [True]], "arr": [[0, 1, 2]], "path": "/tmp/x",
                   "cfg": {"name": "c", "values": [1.0, 2.0]}, "none": None}
    assert type(out["a"][0]) is int and type(out["a"][1][0]) is bool
    assert artifacts.to_jsonable(_Cfg) is _Cfg  # a class is left alone


def test_dumps_json_is_canonical():
    text = artifacts.dumps_json({"b": 1, "a": {"d": (1, 2), "c": None}})
    assert text == '{\n  "a": {\n    "c": null,\n    "d": [\n      1,\n      2\n    ]\n  },\n  "b": 1\n}\n'
    assert artifacts.dumps_json({"a": 1, "b": 2}) == artifacts.dumps_json({"b": 2, "a": 1})


def test_json_round_trip(tmp_path):
    obj = {"name": "A2E", "seeds": [6, 21], "r": 0.731, "nested": {"ok": True, "nan": None}, "text": "± µ"}
    path = artifacts.write_json(tmp_path / "sub" / "m.json", obj)
    assert artifacts.read_json(path) == obj
    assert path.read_text(encoding="utf-8") == artifacts.dumps_json(obj) and leftovers(path.parent) == []


# --------------------------------------------------------------------------- npy
@pytest.mark.parametrize("array", [np.arange(12, dtype=np.float32).reshape(3, 4), np.array([True, False]),
                                   np.array(2.5), np.zeros((0, 5), dtype=np.int16)],
                         ids=["float32", "bool", "scalar", "empty"])
def test_npy_round_trip_keeps_dtype_shape_and_values(tmp_path, array):
    path = artifacts.write_npy(tmp_path / "x.npy", array)
    back = artifacts.read_npy(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert leftovers(tmp_path) == []


def test_npy_refuses_objects(tmp_path):
    with pytest.raises(ValueError):
        artifacts.write_npy(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "o.npy").exists() and leftovers(tmp_path) == []
    np.save(tmp_path / "pickled.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        artifacts.read_npy(tmp_path / "pickled.npy")


def test_npy_writes_are_byte_identical(tmp_path):
    x = np.linspace(0, 1, 7, dtype=np.float64)
    a, b = artifacts.write_npy(tmp_path / "a.npy", x), artifacts.write_npy(tmp_path / "b.npy", x.copy())
    assert a.read_bytes() == b.read_bytes()


# --------------------------------------------------------------------------- hashes
def test_config_hash_is_the_sha256_of_the_compact_sorted_json():
    cfg = {"lr": 0.002, "max_iters": 1000, "name": "paper"}
    text = json.dumps(cfg, sort_keys=True, separators=(",", ":"))
    assert artifacts.config_hash(cfg) == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert artifacts.config_hash(cfg, length=64) == hashlib.sha256(text.encode()).hexdigest()


def test_config_hash_is_stable():
    # pinned: a change here changes every artifact key of every run
    assert artifacts.config_hash({"a": 1, "b": [1.5, "x"]}) == "253252306831"
    assert artifacts.config_hash({"b": [1.5, "x"], "a": 1}) == "253252306831"
    assert artifacts.config_hash({"a": np.int64(1), "b": (np.float64(1.5), "x")}) == "253252306831"
    assert artifacts.config_hash({"a": 1, "b": [1.5, "y"]}) != "253252306831"


def test_config_hash_of_a_profile():
    smoke = get_profile("smoke")
    assert artifacts.config_hash(smoke) == artifacts.config_hash(smoke.to_dict())
    assert artifacts.config_hash(smoke) != artifacts.config_hash(get_profile("quick"))
    assert len(artifacts.config_hash(smoke, length=8)) == 8


def test_file_sha256(tmp_path):
    data = bytes(range(256)) * 10
    path = artifacts.write_bytes(tmp_path / "f.bin", data)
    assert artifacts.file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert artifacts.file_sha256(path, chunk=7) == hashlib.sha256(data).hexdigest()  # chunking is invisible
    empty = artifacts.write_bytes(tmp_path / "e.bin", b"")
    assert artifacts.file_sha256(empty) == hashlib.sha256(b"").hexdigest()


# --------------------------------------------------------------------------- damaged files are named
def test_read_json_names_a_damaged_file(tmp_path):
    path = artifacts.write_json(tmp_path / "metrics.json", {"a": [1, 2, 3]})
    path.write_bytes(path.read_bytes()[:9])  # truncated by an interrupted copy
    with pytest.raises(MerError, match=r"metrics\.json: damaged JSON file \(.* at line 2, column \d+\); "
                                       r"delete it and rerun to recompute it"):
        artifacts.read_json(path)
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(MerError, match=r"metrics\.json: damaged JSON file \(not UTF-8 text"):
        artifacts.read_json(path)
    with pytest.raises(MerError, match="metrics.json: damaged JSON file .*; recomputing it$"):
        artifacts.read_json(path, hint="recomputing it")


def test_read_npy_names_a_damaged_or_missing_file(tmp_path):
    path = artifacts.write_npy(tmp_path / "002.npy", np.arange(200, dtype=np.float32))
    data = path.read_bytes()
    for cut in (len(data) - 8, 40):  # data truncated; header truncated
        path.write_bytes(data[:cut])
        with pytest.raises(MerError, match=r"002\.npy: not a readable \.npy array \(.+\); delete it and rerun"):
            artifacts.read_npy(path)
        with pytest.raises(MerError, match=r"002\.npy: not a readable \.npy array"):
            artifacts.read_npy_bytes(data[:cut], path)
    with pytest.raises(MerError, match=r"003\.npy: missing"):
        artifacts.read_npy(tmp_path / "003.npy")
    np.testing.assert_array_equal(artifacts.read_npy_bytes(data, path), np.arange(200, dtype=np.float32))


def test_read_torch_loads_tensors_and_names_a_damaged_file(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.arange(50.0)}, path)
    assert torch.equal(artifacts.read_torch(path)["w"], torch.arange(50.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MerError, match=r"model\.pt: damaged torch file \(RuntimeError: .+\); delete it and rerun"):
        artifacts.read_torch(path)
    torch.save({"obj": _Cfg("x", (1.0,))}, path)  # not weights_only-loadable: refused, named
    with pytest.raises(MerError, match=r"model\.pt: damaged torch file \(UnpicklingError"):
        artifacts.read_torch(path)
    with pytest.raises(MerError, match=r"state\.pt: missing"):
        artifacts.read_torch(tmp_path / "state.pt", hint="ignored")


# --------------------------------------------------------------------------- integrity records
def test_verify_file_finds_truncated_and_same_size_damage(tmp_path):
    path = artifacts.write_bytes(tmp_path / "a.bin", bytes(range(100)))
    record = artifacts.file_record(path)
    assert record == {"size": 100, "sha256": hashlib.sha256(bytes(range(100))).hexdigest()}
    assert artifacts.verify_file(path, record["size"], record["sha256"])
    assert artifacts.verify_record(path, record)
    path.write_bytes(bytes(range(99)) + b"\x00")  # same size, one byte changed
    assert not artifacts.verify_file(path, record["size"], record["sha256"])
    path.write_bytes(bytes(range(50)))  # truncated
    assert not artifacts.verify_record(path, record)
    assert not artifacts.verify_record(tmp_path / "gone.bin", record)
    assert not artifacts.verify_record(path, None) and not artifacts.verify_file(path, 50, None)


def test_checksums_record_and_check_a_folder(tmp_path):
    artifacts.write_bytes(tmp_path / "model.pt", b"weights")
    artifacts.write_text(tmp_path / "cost.json", "{}\n")
    assert artifacts.checksum_problem(tmp_path) == f"{tmp_path / 'checksums.json'}: missing; the files of " \
                                                   f"{tmp_path} cannot be checked"
    artifacts.write_checksums(tmp_path, ["model.pt", "cost.json"])
    assert artifacts.checksum_problem(tmp_path, ["model.pt"]) is None
    assert "expected a record of model.pt, history.csv" in artifacts.checksum_problem(
        tmp_path, ["model.pt", "history.csv"])
    (tmp_path / "model.pt").write_bytes(b"weightz")
    assert artifacts.checksum_problem(tmp_path) == (f"{tmp_path / 'model.pt'}: damaged (its size or SHA-256 "
                                                    f"differs from its record in {tmp_path / 'checksums.json'})")
    (tmp_path / "model.pt").unlink()
    assert artifacts.checksum_problem(tmp_path).startswith(f"{tmp_path / 'model.pt'}: missing")
    (tmp_path / "checksums.json").write_text('{"model.pt": {"si')
    assert artifacts.checksum_problem(tmp_path).startswith(f"{tmp_path / 'checksums.json'}: damaged JSON file")


# --------------------------------------------------------------------------- leftovers of killed writes
def test_remove_stale_temps_removes_only_the_temp_files_of_atomic_writes(tmp_path):
    with artifacts.atomic_path(tmp_path / "run" / "models" / "model.pt") as tmp:
        real_temp_name = tmp.name
    assert artifacts.TEMP_NAME.fullmatch(real_temp_name)
    stale = [tmp_path / "run" / ".stats.json.4194305-k3x_9ab2.tmp",
             tmp_path / "run" / "models" / "A2E" / "seed1-abc" / ".model.pt.4194305-abcdefgh.tmp",
             tmp_path / "run" / "cache" / "spectrograms" / f".002.npy.4194305-{real_temp_name[-12:-4]}.tmp"]
    kept = [tmp_path / "run" / "notes.tmp", tmp_path / "run" / ".model.pt.tmp",
            tmp_path / "run" / ".model.pt.abc.tmp", tmp_path / "run" / ".model.pt.ABCDEFGH.tmp",
            tmp_path / "run" / "model.pt.abcdefgh.tmp", tmp_path / "run" / ".model.pt.abcdefgh.tmp.bak",
            tmp_path / "run" / "models" / "metrics.json", tmp_path / "outside" / ".x.abcdefgh.tmp"]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half-writ")
    (tmp_path / "run" / ".folder.abcdefgh.tmp").mkdir()  # a folder, not a temp file: left alone
    assert artifacts.remove_stale_temps(tmp_path / "run") == sorted(stale)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert (tmp_path / "run" / ".folder.abcdefgh.tmp").is_dir()
    assert artifacts.remove_stale_temps(tmp_path / "run") == []
    assert artifacts.remove_stale_temps(tmp_path / "missing") == []


def test_remove_stale_temps_leaves_the_temp_files_of_running_writers(tmp_path):
    """A notebook or worker still writing in the run directory keeps its temporary file."""
    import os

    mine = tmp_path / f".model.pt.{os.getpid()}-abcdefgh.tmp"
    parent = tmp_path / f".stats.json.{os.getppid()}-abcdefgh.tmp"
    dead = tmp_path / ".stats.json.4194305-abcdefgh.tmp"
    for path in (mine, parent, dead):
        path.write_bytes(b"being written")
    assert artifacts.remove_stale_temps(tmp_path) == [dead]
    assert mine.exists() and parent.exists()


def test_cached_stage_computes_once_reuses_and_recomputes_a_damaged_result(tmp_path):
    stage = artifacts.CachedStage("summary.json", ("a.txt",), "recomputing it")
    calls = []

    def compute(out):
        calls.append(out)
        artifacts.write_text(out / "a.txt", "result\n")
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return ["a.txt"], {"n": len(calls)}

    key = {"x": 1}
    out = stage.run(tmp_path / "r", artifacts.config_record(key), compute)
    assert json.loads((out / "config.json").read_text())["hash"] == artifacts.config_hash(key)
    assert stage.problem(out) is None and json.loads((out / "summary.json").read_text()) == {"n": 1}
    assert stage.run(out, {}, compute) == out and len(calls) == 1  # reused: not computed again
    # an interrupted computation leaves no marker: the folder is not finished
    with pytest.raises(RuntimeError):
        stage.run(out, artifacts.config_record(key), compute, overwrite=True)
    assert stage.problem(out) == f"{out}: no finished result (summary.json missing)" and not stage.is_finished(out)
    stage.run(out, artifacts.config_record(key), compute)
    (out / "a.txt").write_text("damaged\n")
    with pytest.warns(UserWarning, match=rf"{out / 'a.txt'}: damaged .*; recomputing it in {out}"):
        stage.run(out, artifacts.config_record(key), compute)
    assert len(calls) == 4 and (out / "a.txt").read_text() == "result\n" and stage.problem(out) is None
    with pytest.raises(MerError, match="a.txt: damaged .*; rerun it"):
        (out / "a.txt").write_text("x")
        stage.check(out, "rerun it")
