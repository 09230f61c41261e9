"""Scaling out: studies on a (local, 2-CPU) Ray cluster give the joblib backend's records, survive a killed worker,
and --device picks or refuses a training device before anything is trained."""
from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import ray
import torch

from siq.codegen.cli import main
from siq.training.arch import Arch
from siq.training.experiments import cache
from siq.training.experiments.grid import Cell
from siq.training.experiments.sweep import quantize_template
from siq.training.quantizers import SIQConfig, SIQPlusConfig
from siq.training.train import TrainConfig
from siq.training.device import check_device, on_device, resolve_device, training_device
from siq.training.errors import SiqError
from siq.training.experiments.backends import CellRuns, run_cells
from siq.training.experiments.study import load_study, run_study
from siq.training.nets import window_lrn

TINY_ARCH = {"name": "tiny", "input": [1, 8, 8], "layers": [
    {"type": "conv", "out": 4, "k": 3}, {"type": "relu"}, {"type": "maxpool", "k": 2},
    {"type": "flatten"}, {"type": "dense", "out": 10}]}
TIMING = ("seconds", "cached")  # fields that may differ between two runs of the same cells


def write_study(folder: Path, methods: list[str], weight_bits: str, act_bits: str, seeds=(0,)) -> Path:
    arch = folder / "tiny.json"
    arch.write_text(json.dumps(TINY_ARCH))
    study = folder / "studies" / "scaleout.toml"
    study.parent.mkdir(parents=True)
    study.write_text(f"""question = "Do the backends agree?"
[defaults]
dataset = "digits"
arch = "{arch}"
epochs = 1
batch_size = 32
lr = 0.03
fc_bits = 4
siq_rounds = 1
siq_epochs = 1
seeds = {list(seeds)}
[[run]]
split = "test"
results = "scaleout.jsonl"
methods = {json.dumps(methods)}
weight_bits = "{weight_bits}"
act_bits = "{act_bits}"
""")
    return study


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs for this file's studies, shut down afterwards."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


def test_a_study_on_ray_gives_the_joblib_records(cluster, tmp_path):
    study = load_study(write_study(tmp_path, ["uniform", "kmeans"], "2,4", "2,4,float"))
    local = run_study(study, tmp_path / "joblib", cache_dir=tmp_path / "cache-joblib", progress=False)
    messages: list[str] = []
    remote = run_study(study, tmp_path / "ray", cache_dir=tmp_path / "cache-ray", progress=False, backend="ray",
                       log=messages.append)
    records = remote["scaleout.jsonl"]
    assert len(records) == 12 and not any(r["cached"] for r in records)
    assert without_timing(records) == without_timing(local["scaleout.jsonl"])
    assert not messages  # nothing retried, nothing failed
    # the driver cached every cell as it arrived: a re-run only reads them
    again = run_study(study, tmp_path / "ray", cache_dir=tmp_path / "cache-ray", progress=False, backend="ray")
    assert all(r["cached"] for r in again["scaleout.jsonl"])
    assert without_timing(again["scaleout.jsonl"]) == without_timing(records)


def cell_workers() -> list[int]:
    """Ray worker processes running a cell now (Ray titles a busy worker ray::<task function>)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(b"ray::_ray_call"):
                pids.append(int(entry.name))
    return pids


def test_a_killed_worker_loses_no_cell(cluster, tmp_path):
    """SIGKILL the first worker seen running a cell: the driver runs that cell again and says so."""
    study = load_study(write_study(tmp_path, ["siq"], "2-4", "2,4", seeds=(0,)))
    killed: list[int] = []
    done = threading.Event()

    def kill_one():
        while not done.is_set() and not killed:
            for pid in cell_workers():
                os.kill(pid, signal.SIGKILL)  # a worker of the cluster this test started
                killed.append(pid)
                break
            time.sleep(0.01)
    killer = threading.Thread(target=kill_one)
    killer.start()
    messages: list[str] = []
    try:
        written = run_study(study, tmp_path / "ray", cache_dir=tmp_path / "cache", progress=False, backend="ray",
                            max_retries=2, log=messages.append)
    finally:
        done.set()
        killer.join()
    assert killed, "no cell was seen running"
    records = written["scaleout.jsonl"]
    assert len(records) == 6 and all(r["accuracy"] > 0 for r in records)
    retried = [m for m in messages if "retried" in m]
    assert len(retried) == 1 and "siq W" in retried[0], messages
    local = run_study(study, tmp_path / "joblib", cache_dir=tmp_path / "cache-joblib", progress=False)
    assert without_timing(records) == without_timing(local["scaleout.jsonl"])


def test_a_cell_that_keeps_failing_is_reported_without_losing_the_others(cluster):
    """math.sqrt fails on -1 at every attempt: that cell is retried, then reported; the other cells all arrive."""
    runs = CellRuns()
    calls = [(n, (float(x),)) for n, x in enumerate([4, -1, 9, 16])]
    results = dict(run_cells(math.sqrt, calls, runs, backend="ray", max_retries=1))
    assert results == {0: 2.0, 2: 3.0, 3: 4.0}
    assert list(runs.failed) == [1] and "ValueError: math domain error" in runs.failed[1]
    assert runs.retried == {1: [runs.failed[1]]}


# ---------------------------------------------------------------- --device

def test_device_auto_trains_on_the_cpu_here_and_says_so(tmp_path, capsys):
    out = tmp_path / "float.pt"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--device", "auto", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "device: cpu (auto: no CUDA device found)"
    assert out.is_file()


@pytest.mark.parametrize("command", [["train", "--dataset", "digits"], ["sweep", "--dataset", "digits"],
                                     ["pipeline", "--dataset", "digits", "--no-target"],
                                     ["quantize", "missing.pt"], ["study", "run"]])
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_device_cuda_is_refused_in_one_line_before_anything_runs(tmp_path, capsys, monkeypatch, command, device):
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--device", device]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("siq: error:") and "CUDA is not available" in err, err
    assert not list(tmp_path.iterdir())


def test_device_specs():
    assert check_device("AUTO") == "auto" and resolve_device("auto").type == "cpu"
    for bad in ("gpu", "cuda:x", "tpu:0"):
        with pytest.raises(SiqError, match="device"):
            check_device(bad)
    assert training_device().type == "cpu"
    with on_device("cpu") as device:
        assert device.type == "cpu" and training_device() == device


@pytest.mark.parametrize("options, message", [
    (["--backend", "ray", "--address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
    (["--backend", "ray", "--address", "head-node"], "write HOST:PORT"),
    (["--address", "auto"], "--address joins a Ray cluster: add --backend ray"),
    (["--backend", "ray", "--max-retries", "-1"], "max_retries must be a whole number >= 0"),
])
def test_cluster_options_are_refused_before_anything_trains(tmp_path, capsys, monkeypatch, options, message):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "--dataset", "digits", *options]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not list(tmp_path.iterdir())


def test_the_gpu_form_of_lrn_matches_torch_in_value_and_gradient():
    """Training off the CPU takes LRN's window sum from shifted slices (torch's avg_pool3d has no deterministic
    CUDA backward); on the CPU both forms agree to float32 rounding, forward and backward."""
    x = (torch.rand(3, 7, 5, 4, generator=torch.Generator().manual_seed(0)) * 3).requires_grad_()
    for size, alpha, beta, k in ((5, 1e-4, 0.75, 2.0), (3, 0.5, 0.75, 1.0), (4, 0.1, 0.5, 1.5)):
        module = torch.nn.LocalResponseNorm(size, alpha, beta, k)
        ours, theirs = window_lrn(module, x), module(x)
        assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-7)
        g_ours, = torch.autograd.grad(ours.sum(), x)
        g_theirs, = torch.autograd.grad(theirs.sum(), x)
        assert torch.allclose(g_ours, g_theirs, rtol=1e-5, atol=1e-6)


def test_cache_keys_name_a_gpu_and_keep_every_cpu_key():
    """GPU-trained weights differ from CPU-trained ones: their cache entries must not be mistaken for each other,
    and the CPU keys stay the keys of every committed result."""
    arch = Arch.from_dict(TINY_ARCH)
    plain = cache.model_key("d", arch, TrainConfig())
    assert cache.model_key("d", arch, TrainConfig(), "cpu") == plain
    assert cache.model_key("d", arch, TrainConfig(), "cuda") != plain
    template = quantize_template(8, 200, SIQConfig(), SIQPlusConfig())
    cell = Cell("siq", 2, 2, 0)
    assert cache.cell_key("m", cell, 8, template, "cpu") == cache.cell_key("m", cell, 8, template) != \
        cache.cell_key("m", cell, 8, template, "cuda")
