"""What a profile's protocol costs, and how long it takes on this device: a prediction from per-pass times.

Counts every job of notebooks 02-05 under ``--profile``
(:func:`mer_lib.attacks.protocol_cost.protocol_jobs`: example passes, upper
bounds without early stopping, and their arithmetic), measures on
``--device`` how long one example takes through each kind of pass at the
profile's width (a training step at the profile's batch size, an attack
iteration on a batch of ``AttackConfig.batch_size`` excerpts, an evaluation
forward pass; one CPU thread, as every job runs), and predicts the compute
seconds of every notebook and their wall time on ``--workers`` workers
(:func:`mer_lib.attacks.protocol_cost.predict_seconds`).

Each worker is assumed to run at the measured single-process speed. On a
CPU with one worker per core that holds (``jobs_throughput.json``: a worker
of two trains at 1.0x the speed of one process alone). On a GPU shared by
several processes it does not: pass the aggregate speed-up measured there
(``--gpu-speedup``, e.g. 7.5 for 8 processes on one H100, measured with
``jobs_throughput.py``-style concurrent training) and the prediction divides
the summed job seconds by it.

``--run-dir`` compares the prediction with a finished run of the same
profile: the seconds its models and attacks recorded (``cost.json``
``wall_seconds``, ``summary.json`` ``seconds``) per notebook, and the
notebooks' wall times (``pipeline_times.json``), which also hold start-up,
data loading and analysis.

Usage::

    python benchmarks/protocol_cost.py [--profile quick|paper-synthetic|...] [--device cpu|cuda]
        [--workers N] [--gpu-speedup S] [--run-dir RUN] [--repeats N] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from machine import benchmark_device, machine_record, median_seconds, synchronize  # benchmarks/machine.py

from mer_lib import artifacts
from mer_lib.attacks import protocol_cost as pc
from mer_lib.attacks.engine import bounded_attack
from mer_lib.config import SYSTEM_REGISTRY, get_profile
from mer_lib.models.nets import build_model
from mer_lib.models.train import EVAL_BATCH

#: Input frames x bands of an excerpt (10 s at the front end's frame rate).
INPUT = (1, 313, 149)
#: System of the timed passes (a bottleneck model; the five differ by a few hundred MACs).
SYSTEM = "A2B2E"


def pass_seconds(profile, device: torch.device, repeats: int) -> dict:
    """Seconds per example of a training step, an attack iteration and an evaluation forward pass."""
    train, attack = profile.train, profile.attack
    torch.manual_seed(0)
    model = build_model(SYSTEM, train.width).to(device)
    if train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr)
    x = torch.randn(train.batch_size, *INPUT).to(device)
    y = torch.rand(train.batch_size, 8, device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x).emotions, y).backward()
        optimizer.step()

    warm = 2 if train.width >= 0.5 else 3
    train_step = median_seconds(step, device, repeats=repeats, warmup=warm)["median_seconds"] / train.batch_size
    model.eval()
    xe = torch.randn(EVAL_BATCH, *INPUT).to(device)
    with torch.no_grad():
        forward = median_seconds(lambda: model(xe), device, repeats=repeats, warmup=warm)["median_seconds"] / EVAL_BATCH
    n, steps = attack.batch_size, (2 if train.width >= 0.5 and device.type == "cpu" else 4)
    xa, ya = torch.randn(n, *INPUT, device=device), torch.rand(n, 8, device=device)
    timed = median_seconds(lambda: bounded_attack(model, xa, ya, eps=0.1, steps=steps),
                           device, repeats=max(2, repeats // 3), warmup=1)["median_seconds"]
    synchronize(device)
    # each step: an evaluation (with the autograd graph) and a backward to the input; then one last evaluation
    iteration = max(timed - n * forward, 0.0) / (n * steps)
    return {"train_step": train_step, "attack_iteration": iteration, "forward": forward}


def recorded_seconds(run_dir: Path) -> dict:
    """Seconds the models and attacks of a finished run recorded, per notebook, and its notebooks' wall times."""
    out: dict[str, float] = {}
    for system, notebook in ((name, s.notebook) for name, s in SYSTEM_REGISTRY.items()):
        for cost in (run_dir / "models" / system).glob("seed*/cost.json"):
            out[notebook] = out.get(notebook, 0.0) + artifacts.read_json(cost)["wall_seconds"]
    for summary in (run_dir / "attacks").glob("*/*/*/summary.json"):
        if summary.parts[-4] != "waveform":
            out["05"] = out.get("05", 0.0) + artifacts.read_json(summary)["seconds"]
    walls = {}
    if (run_dir / "pipeline_times.json").exists():
        times = artifacts.read_json(run_dir / "pipeline_times.json")  # {notebook name: {"seconds": ...}}
        walls = {name[:2]: entry["seconds"] for name, entry in times.items()}
    return {"job_seconds": out, "notebook_wall_seconds": walls}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="CPU: worker processes (default: one per core)")
    parser.add_argument("--gpu-speedup", type=float, help="GPU: aggregate speed-up of the concurrent processes")
    parser.add_argument("--run-dir", type=Path, help="a finished run of the profile to compare with")
    parser.add_argument("--repeats", type=int, help="timings per pass kind (default: 15; 5 at width >= 0.5)")
    parser.add_argument("--out", help="default: benchmarks/results/protocol_cost_<profile>[_<device kind>].json")
    args = parser.parse_args(argv)
    args.device = benchmark_device(args.device)
    if args.device.type == "cuda" and args.gpu_speedup is None:
        parser.error("on a GPU, give --gpu-speedup (the measured speed-up of the concurrent processes)")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Count, measure, predict, compare; write the JSON and print a summary."""
    args = parse_args(argv)
    load_before = os.getloadavg()
    torch.set_num_threads(1)
    profile = get_profile(args.profile)
    repeats = args.repeats or (5 if profile.train.width >= 0.5 else 15)
    jobs = pc.protocol_jobs(profile)
    seconds = pass_seconds(profile, args.device, repeats)
    single = pc.predict_seconds(jobs, seconds, workers=1)
    if args.device.type == "cuda":
        table = single.assign(wall_seconds=single["job_seconds"] / args.gpu_speedup)
        how = f"summed job seconds / {args.gpu_speedup} (the given speed-up of concurrent processes on the GPU)"
    else:
        table = pc.predict_seconds(jobs, seconds, workers=args.workers)
        how = f"jobs in order on {args.workers} worker(s), each at the measured one-thread speed"
    result = {
        "what": f"passes and arithmetic of notebooks 02-05 under the {profile.name!r} profile (upper bounds: no "
                "early stopping), per-example pass times measured here, predicted compute and wall seconds",
        "profile": profile.name, "device": str(args.device), "prediction": how,
        "seconds_per_example": seconds, "split_sizes": list(pc.split_sizes(profile)),
        "passes": {k: int(jobs[k].sum()) for k in pc.PASS_COLUMNS}, "pflop": float(jobs["gflop"].sum() / 1e6),
        "notebooks": table.to_dict(orient="records"),
        "predicted_wall_seconds_02_05": float(table["wall_seconds"].sum()),
        "machine": machine_record(load_before, args.device),
    }
    if args.run_dir is not None:
        recorded = recorded_seconds(args.run_dir)
        result["recorded"] = recorded
        result["recorded_vs_predicted_job_seconds"] = {
            row["notebook"]: recorded["job_seconds"][row["notebook"]] / row["job_seconds"]
            for row in result["notebooks"] if row["notebook"] in recorded["job_seconds"]}
    suffix = "" if args.device.type == "cpu" else f"_{args.device.type}"
    out = args.out or str(Path(__file__).resolve().parent / "results" / f"protocol_cost_{profile.name}{suffix}.json")
    artifacts.write_json(out, result)
    print(json.dumps({k: result[k] for k in ("pflop", "predicted_wall_seconds_02_05")}), f"written to {out}")
    return result


if __name__ == "__main__":
    main()
