"""`make bench`: instructions per inference, code/weights/RAM bytes and host latency of the generated firmware.

Trains paper-mnist briefly (bit-exactness and instruction counts do not depend on accuracy), quantizes SIQ W4A4 with
8-bit FC (the `make firmware` defaults) through `siq pipeline --no-target`, then for cortex-m0/m3/m4/m7 at -O2,
-O3 and -Os counts executed instructions exactly (QEMU TCG plugin, total and per op) and measures the model's
code, weights and RAM from the link map. Also: the reference-kernel build (lower(fast=False)) on Cortex-M4 -O2,
host-C latency per image against PyTorch eager float at batch 1 and 256, wall time of float training per epoch
and of SIQ end to end; with --fashion, also one Fashion-MNIST float epoch of paper-mnist on every training device
this machine has (the CPU, each CUDA device). Prints a table beside the CMSIS-NN figures measured on the same network
and writes JSON. Then `networks` (codegen/bench_networks.py): paper-mnist and the MLPerf Tiny presets (random
weights, W4A4) on Cortex-M4 -O2 beside CMSIS-NN's anchors (docs/results/cmsis-nn-anchors.json).

    python -m siq.codegen.bench --out out/bench.json [--fashion] [--cpus cortex-m4] [--opts=-O2] [--networks ds-cnn]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from siq.codegen import api, bench_networks, target
from siq.codegen.export import write_sources
from siq.codegen.host import build_host
from siq.codegen.lower import lower
from siq.training.data import load_dataset
from siq.training.nets import images_to_input
from siq.training.quant import load_quantized
from siq.training.train import load_checkpoint

MACS = 221_800
# CMSIS-NN, measured on the same network on QEMU mps2-an386 (Cortex-M4), arm-none-eabi-gcc 12.2, LRN excluded
# (docs/results/cmsis-nn-anchors.json, with the MLPerf Tiny networks' figures and the conditions of both).
ANCHORS = bench_networks.load_anchors()
_PAPER = ANCHORS["networks"]["paper-mnist"]
CMSIS_NN = {
    "cmsis_nn_int8": _PAPER["instructions_s8"],
    "cmsis_nn_int4": _PAPER["instructions_s4"],
    "cmsis_nn_int8_fc_layers": _PAPER["fc_instructions_s8"],
    "plain_c_compile_time_shapes": _PAPER["plain_c_compile_time_shapes"],
    "kernel_code_bytes": _PAPER["code_bytes"],
    "activation_ram_bytes": _PAPER["activation_ram_bytes"],
    "weights_bytes": _PAPER["weights_bytes"],
}
GOALS = {"instructions": 707_000, "stretch_instructions": 443_600, "code_bytes": 3 * 1024, "arena_bytes": 1024}


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu_model": model or platform.processor(), "python": sys.version.split()[0],
            "platform": platform.platform()}


def train_model(work: Path, dataset: str, epochs: int) -> tuple[Path, float]:
    """siq pipeline --no-target with a short schedule; returns (output dir, wall seconds)."""
    siq = Path(sys.executable).with_name("siq")
    command = [str(siq), "pipeline", "--out", str(work), "--force", "--no-target", "--dataset", dataset,
               "--epochs", str(epochs), "--siq-rounds", "1", "--siq-epochs", "1"]
    start = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return work, time.time() - start


def training_devices() -> list[str]:
    """Every device `--device` can train on here: the CPU, then each CUDA device torch sees."""
    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def epoch_seconds_by_device(work: Path, devices: list[str], dataset: str = "fashion") -> dict:
    """Seconds of one float epoch of paper-mnist on `dataset`, per device (training only: no data loading,
    no evaluation)."""
    seconds = {}
    for device in devices:
        trained = api.train(dataset, epochs=1, out=work / f"epoch-{device.replace(':', '-')}.pt", device=device,
                            log=lambda *_: None)
        seconds[device] = round(trained.metrics["seconds_per_epoch"], 2)
        print(f"{dataset} paper-mnist float epoch on {device}: {seconds[device]} s", flush=True)
    return seconds


def count(model_dir: Path, image, cpu: str, opt: str, work: Path) -> dict:
    insn = target.instructions_per_inference(model_dir, "siq_model", cpu, None, image, opt, work_dir=work)
    size = target.footprint(work / "plain" / "firmware.elf", "siq_model")
    return {"cpu": cpu, "opt": opt, "instructions": insn["total"], "per_op": insn["per_op"],
            "instructions_per_mac": round(insn["total"] / MACS, 3), "code_bytes": size["code_bytes"],
            "weights_bytes": size["weights_bytes"], "bss_bytes": size["bss_bytes"], "data_bytes": size["data_bytes"],
            "stack_bytes": size["stack_bytes"], "ram_bytes": size["ram_bytes"]}


def host_latency(model_dir: Path, lm, images: np.ndarray, net, work: Path, repeats: int = 7) -> dict:
    host = build_host(model_dir, lm.prefix, work / "host")
    batch = images[:256]
    per_image = []
    for _ in range(repeats):
        start = time.perf_counter()
        host.infer(batch)
        per_image.append((time.perf_counter() - start) / len(batch))
    c_us = float(np.median(per_image)) * 1e6
    net = net.float().eval()
    torch.set_num_threads(os.cpu_count() or 1)

    def torch_per_image(size: int) -> float:
        x = images_to_input(batch[:size], torch.float32)
        times = []
        with torch.no_grad():
            net(x)
            for _ in range(repeats if size > 1 else 1):
                start = time.perf_counter()
                if size == 1:
                    for i in range(64):
                        net(images_to_input(batch[i:i + 1], torch.float32))
                    times.append((time.perf_counter() - start) / 64)
                else:
                    net(x)
                    times.append((time.perf_counter() - start) / size)
        return float(np.median(times)) * 1e6
    eager1, eager256 = torch_per_image(1), torch_per_image(256)
    return {"host_c_us_per_image": round(c_us, 2), "torch_eager_batch1_us_per_image": round(eager1, 2),
            "torch_eager_batch256_us_per_image": round(eager256, 2),
            "speedup_vs_batch1": round(eager1 / c_us, 1), "speedup_vs_batch256": round(eager256 / c_us, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/bench.json")
    parser.add_argument("--fashion", action="store_true", help="also time float training and SIQ on Fashion-MNIST")
    parser.add_argument("--cpus", default="cortex-m0,cortex-m3,cortex-m4,cortex-m7")
    parser.add_argument("--opts", default="-O2,-O3,-Os")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--networks", default=",".join(bench_networks.NETWORKS),
                        help="networks counted on Cortex-M4 -O2 beside CMSIS-NN ('' for none); presets that do not "
                             "exist in this version are skipped")
    args = parser.parse_args(argv)

    result: dict = {"machine": machine(), "network": "paper-mnist SIQ W4A4, FC 8 bits", "macs": MACS,
                    "cmsis_nn_reference": CMSIS_NN, "goals": GOALS}
    with tempfile.TemporaryDirectory(prefix="siq-bench-") as scratch:
        work = Path(scratch)
        runs = [("mnist5k", args.epochs)] + ([("fashion", 1)] if args.fashion else [])
        timing = {}
        for dataset, epochs in runs:
            out, seconds = train_model(work / dataset, dataset, epochs)
            report = json.loads((out / "report.json").read_text())
            parts = report.get("seconds", {})
            timing[dataset] = {"siq_end_to_end_seconds": round(seconds, 1), "epochs": epochs,
                               "float_seconds_per_epoch": round(parts.get("train", float("nan")) / epochs, 2),
                               "quantize_seconds": parts.get("quantize"), "verify_seconds": parts.get("verify")}
            print(f"{dataset}: pipeline (train {epochs} epochs + SIQ W4A4 + export + verify) {seconds:.1f} s",
                  flush=True)
        result["wall_time"] = timing
        if args.fashion:
            result["fashion_epoch_seconds_by_device"] = epoch_seconds_by_device(work, training_devices())
        model = work / "mnist5k"
        qm = load_quantized(model / "quantized.pt")
        lm = lower(qm)
        reference_dir = work / "reference"
        write_sources(lower(qm, fast=False), reference_dir)
        data = load_dataset("mnist5k", seed=0)
        image = data.test_x[0]
        rows = []
        for cpu in args.cpus.split(","):
            for opt in args.opts.split(","):
                row = count(model / "firmware", image, cpu, opt, work / f"{cpu}{opt}")
                rows.append(row)
                print(f"{cpu:10s} {opt:4s} {row['instructions']:>10,} instr ({row['instructions_per_mac']:.2f}/MAC)"
                      f"  code {row['code_bytes']:>5,} B  weights {row['weights_bytes']:>6,} B  RAM "
                      f"{row['ram_bytes']:>5,} B (bss {row['bss_bytes']} + stack {row['stack_bytes']})  per op "
                      f"{row['per_op']}", flush=True)
        result["firmware"] = rows
        ref = count(reference_dir, image, "cortex-m4", "-O2", work / "reference-m4")
        result["reference_kernels_cortex_m4_O2"] = ref
        result["arena_bytes"] = lm.arena_bytes
        net, _ = load_checkpoint(model / "float.pt")
        result["host"] = host_latency(model / "firmware", lm, data.test_x, net, work)
        names = [n for n in args.networks.split(",") if n]
        result["networks"] = bench_networks.networks(qm, image, work, names, log=lambda m: print(m, flush=True))
        result["cmsis_nn_anchors"] = ANCHORS
    m4 = next((r for r in rows if r["cpu"] == "cortex-m4" and r["opt"] == "-O2"), None)
    print()
    int8, plain = CMSIS_NN["cmsis_nn_int8"], CMSIS_NN["plain_c_compile_time_shapes"]
    print(f"reference figures (CMSIS-NN on the same network, Cortex-M4): CMSIS-NN int8 {int8['-O2']:,} instr at -O2 "
          f"(-O3 {int8['-O3']:,}, -Os {int8['-Os']:,}), int4 {CMSIS_NN['cmsis_nn_int4']['-O2']:,}, FC layers "
          f"{CMSIS_NN['cmsis_nn_int8_fc_layers']:,}; plain C {plain['-O2']:,} -O2 / {plain['-O3']:,} -O3; kernel code "
          f"{CMSIS_NN['kernel_code_bytes']}; activation RAM {CMSIS_NN['activation_ram_bytes']:,} B")
    print(f"reference kernels of this model, Cortex-M4 -O2: {ref['instructions']:,} instr, code {ref['code_bytes']:,} B")
    if m4:
        print(f"optimised, Cortex-M4 -O2: {m4['instructions']:,} instr = "
              f"{m4['instructions'] / int8['-O2']:.2f} x CMSIS-NN int8 "
              f"(goal <= {GOALS['instructions']:,}, stretch <= {GOALS['stretch_instructions']:,}); code "
              f"{m4['code_bytes']:,} B (goal <= 3 KB); activation RAM {m4['bss_bytes']:,} B = the arena, conv filter "
              f"scratch included (goal <= 1 KB; cores without DSP add a static int16 filter), stack "
              f"{m4['stack_bytes']:,} B")
    h = result["host"]
    print(f"host C {h['host_c_us_per_image']} us/image; PyTorch eager float batch 1 {h['torch_eager_batch1_us_per_image']}"
          f" us ({h['speedup_vs_batch1']}x), batch 256 {h['torch_eager_batch256_us_per_image']} us/image "
          f"({h['speedup_vs_batch256']}x)")
    if result["networks"]:
        print()
        print("\n".join(bench_networks.table(result["networks"], ANCHORS)))
    print(f"machine: {result['machine']['cores']} cores, {result['machine']['cpu_model']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
