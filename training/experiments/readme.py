"""The README's figures, generated from committed evidence instead of typed: the results table (between
<!-- results --> markers) from the studies' committed results, the bench table (between <!-- bench --> markers)
from docs/results/bench.json (a copy of `make bench`'s out/bench.json), and docs/README.md's index of studies
(between <!-- studies --> markers) from docs/studies.

    python -m siq.training.experiments.readme           rewrite README.md and docs/README.md
    python -m siq.training.experiments.readme --check   exit 1 when either differs from what would be written

Each results-table value is the mean test accuracy, over the seeds a study run made, of one cell of one run of a
study (ROWS names them), so every figure links to the study that measured it; a run's records are the slice of its
results file that the run writes (runs sharing a file are concatenated in order, which test_studies checks).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from siq.training.errors import SiqError

from .grid import cells_for
from .study import Study, find_studies, load_study

# The source tree this module sits in (an installed copy has no README beside it: then the working folder)
ROOT = Path(__file__).resolve().parents[2]
if not (ROOT / "docs" / "studies").is_dir():
    ROOT = Path.cwd()
COLUMNS = (("float", None, None), ("W4A4", 4, 4), ("W2A4", 2, 4), ("W2A2", 2, 2))
RESNET8 = "Fashion-MNIST 32×32×3 (12,000 training images), resnet8"
DS_CNN = "Fashion-MNIST (12,000 training images), ds-cnn-28"
# (row label, {column: [(study, run number, method), ...]}): the runs whose cells give each column, seeds pooled.
# The float column is the float network itself (the float_accuracy of the row's W2A2 records).
ROWS = [
    ("mnist5k · SIQ (the paper's method)",
     {c: [("mnist5k-bit-widths", 1, "siq")] for c in ("W4A4", "W2A4", "W2A2")}),
    ("mnist5k · siq+",
     {c: [("mnist5k-siq-plus-bit-widths", 1, "siq+")] for c in ("W4A4", "W2A4", "W2A2")}),
    ("mnist5k · siq+, 60-epoch recipe, real steps",
     {"W2A2": [("mnist5k-100-epoch-recipe", 7, "siq+")]}),
    ("Fashion-MNIST · SIQ (the paper's method)",
     {c: [("fashion-bit-widths", 1, "siq")] for c in ("W4A4", "W2A4", "W2A2")}),
    ("Fashion-MNIST · siq+, dropout-0.2 recipe, real steps, constant penalty",
     {"W4A4": [("fashion-real-steps", 6, "siq+")], "W2A4": [("fashion-real-steps", 6, "siq+")],
      "W2A2": [("fashion-w2a2-continuation-penalty", 9, "siq+"), ("fashion-w2a2-penalty-more-seeds", 5, "siq+")]}),
    ("Fashion-MNIST 32×32, paper-office · SIQ",
     {c: [("fashion32-office-bit-widths", 1, "siq")] for c in ("W4A4", "W2A4", "W2A2")}),
    (f"{RESNET8} · SIQ, 12-bit codebook entries", {"W4A4": [("fashion-mlperf-presets", 2, "siq")]}),
    (f"{RESNET8} · SIQ, 12-bit codebook entries, output calibration",
     {"W4A4": [("fashion-mlperf-presets-output-calibration", 3, "siq")]}),
    (f"{RESNET8} · SIQ, 12-bit codebook entries, output calibration, 6 rounds × 2 epochs",
     {"W4A4": [("fashion-mlperf-presets-longer-retraining", 1, "siq")]}),
    (f"{RESNET8} · siq+, 12-bit codebook entries",
     {"W4A4": [("fashion-mlperf-presets", 9, "siq+")], "W2A4": [("fashion-mlperf-presets", 3, "siq+")]}),
    (f"{RESNET8} · siq+, 12-bit codebook entries, output calibration",
     {c: [("fashion-mlperf-presets-siq-plus-output-calibration", 1, "siq+")] for c in ("W4A4", "W2A4")}),
    (f"{DS_CNN} · SIQ, 12-bit codebook entries", {"W4A4": [("fashion-mlperf-presets", 5, "siq")]}),
    (f"{DS_CNN} · SIQ, 12-bit codebook entries, output calibration",
     {"W4A4": [("fashion-mlperf-presets-output-calibration", 6, "siq")]}),
    (f"{DS_CNN} · SIQ, 12-bit codebook entries, output calibration, steps per channel at depthwise inputs",
     {"W4A4": [("fashion-ds-cnn-28-channel-steps", 2, "siq")]}),
    (f"{DS_CNN} · SIQ, 12-bit codebook entries, output calibration, steps per channel at every separable map",
     {"W4A4": [("fashion-ds-cnn-28-separable-channel-steps", 2, "siq")]}),
    (f"{DS_CNN} · SIQ, 12-bit codebook entries, output calibration, steps per channel at every separable map, "
     "6 rounds × 2 epochs", {"W4A4": [("fashion-mlperf-presets-longer-retraining", 2, "siq")]}),
    (f"{DS_CNN} · siq+, 12-bit codebook entries",
     {"W4A4": [("fashion-mlperf-presets", 10, "siq+")], "W2A4": [("fashion-mlperf-presets", 6, "siq+")]}),
    (f"{DS_CNN} · siq+, 12-bit codebook entries, output calibration",
     {c: [("fashion-mlperf-presets-siq-plus-output-calibration", 2, "siq+")] for c in ("W4A4", "W2A4")}),
    (f"{DS_CNN} · siq+, 12-bit codebook entries, output calibration, steps per channel at depthwise inputs",
     {"W4A4": [("fashion-ds-cnn-28-channel-steps", 3, "siq+")]}),
    (f"{DS_CNN} · siq+, 12-bit codebook entries, output calibration, steps per channel at every separable map",
     {"W4A4": [("fashion-ds-cnn-28-separable-channel-steps", 3, "siq+")]}),
]


def run_records(study: Study, number: int, results_dir: Path) -> list[dict]:
    """The committed records that run `number` of a study wrote."""
    run = study.runs[number - 1]
    start = 0
    for earlier in study.runs[:number - 1]:
        if earlier.results == run.results:
            a = earlier.sweep_arguments()
            start += len(cells_for(a["methods"], a["weight_bits"], a["act_bits"], a["seed"]))
    a = run.sweep_arguments()
    size = len(cells_for(a["methods"], a["weight_bits"], a["act_bits"], a["seed"]))
    lines = [line for line in (results_dir / run.results).read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines[start:start + size]]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def results_table(studies_dir: Path, results_dir: Path, link_prefix: str = "docs/studies/") -> str:
    studies: dict[str, Study] = {}
    header = "| dataset · method | " + " | ".join(c for c, _, _ in COLUMNS) + " |"
    lines = [header, "|---" * (len(COLUMNS) + 1) + "|"]
    for label, columns in ROWS:
        cells = []
        float_sources = columns.get("W2A2") or next(iter(columns.values()))
        for name, w, a in COLUMNS:
            sources = float_sources if name == "float" else columns.get(name)
            if not sources:
                cells.append("—")
                continue
            values, links = [], []
            for study_name, number, method in sources:
                if study_name not in studies:
                    studies[study_name] = load_study(studies_dir / f"{study_name}.toml")
                records = run_records(studies[study_name], number, results_dir)
                if name == "float":
                    by_seed = {r["seed"]: r["float_accuracy"] for r in records}
                    values += list(by_seed.values())
                else:
                    picked = [r for r in records if (r["method"], r["conv_bits"], r["act_bits"]) == (method, w, a)]
                    if not picked:
                        raise SiqError(f"{study_name} run {number} has no {method} W{w}A{a} cell")
                    values += [r["accuracy"] for r in picked]
                links.append(study_name)
            seeds = f" ({len(values)} seeds)" if len(values) > 1 else ""
            cells.append(f"[{100 * _mean(values):.1f} %]({link_prefix}{links[-1]}.toml){seeds}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _n(value: int) -> str:
    return f"{value:,}"


def _ratio_text(batched_us: float, c_us: float) -> str:
    """Batched PyTorch against the one-image C loop, per image, said the way round that reads as a speed-up."""
    if batched_us < c_us:
        return f"batched PyTorch is {c_us / batched_us:.1f}× faster per image than the one-image C loop"
    return f"the one-image C loop is {batched_us / c_us:.1f}× faster per image than batched PyTorch"


def bench_table(bench: dict) -> str:
    macs = bench["macs"]
    machine = bench["machine"]
    lines = [f"`make bench` ({bench['network']}, {_n(macs)} MACs, {machine.get('toolchain', 'arm-none-eabi-gcc')}, "
             f"{machine.get('qemu', 'QEMU')} with our TCG plugin; instruction counts are exact and identical on "
             "every run; RAM = static arena + worst-case stack):", "",
             "| core | opt | instructions / inference | per MAC | model code | weights (rodata) "
             "| RAM (arena + stack) |",
             "|---|---|---|---|---|---|---|"]
    for row in bench["firmware"]:
        core = row["cpu"].replace("cortex-m", "Cortex-M")
        lines.append(f"| {core} | {row['opt']} | {_n(row['instructions'])} | {row['instructions'] / macs:.2f} | "
                     f"{_n(row['code_bytes'])} B | {_n(row['weights_bytes'])} B | {_n(row['bss_bytes'])} B + "
                     f"{_n(row['stack_bytes'])} B |")
    ref = bench["reference_kernels_cortex_m4_O2"]
    lines.append(f"| Cortex-M4, reference kernels | -O2 | {_n(ref['instructions'])} | "
                 f"{ref['instructions'] / macs:.1f} | {_n(ref['code_bytes'])} B | | |")
    m4 = next(r for r in bench["firmware"] if (r["cpu"], r["opt"]) == ("cortex-m4", "-O2"))
    cmsis = bench["cmsis_nn_reference"]
    int8 = cmsis["cmsis_nn_int8"]["-O2"]
    host = bench["host"]
    lines += ["", f"Same network on the same emulated M4: CMSIS-NN int8 {_n(int8)} instructions at -O2 (int4: "
              f"{_n(cmsis['cmsis_nn_int4']['-O2'])}), kernel code {cmsis['kernel_code_bytes']}, activation RAM "
              f"{_n(cmsis['activation_ram_bytes'])} B: siq's M4 build needs {m4['instructions'] / int8:.2f}× the "
              "instructions.", "",
              f"Host C (one image at a time, one thread): {host['host_c_us_per_image']} µs per image. PyTorch eager "
              f"float on the same network: {host['torch_eager_batch1_us_per_image']} µs per image at batch 1 "
              f"({host['torch_eager_batch1_us_per_image'] / host['host_c_us_per_image']:.1f}× the C) and "
              f"{host['torch_eager_batch256_us_per_image']} µs per image at batch 256 "
              f"({_ratio_text(host['torch_eager_batch256_us_per_image'], host['host_c_us_per_image'])})."]
    wall = bench.get("wall_time", {})
    epochs = [f"{name} {t['float_seconds_per_epoch']} s" for name, t in wall.items()
              if t.get("float_seconds_per_epoch") is not None]
    if epochs:
        lines += ["", "Training wall time (training always runs on one torch thread, so that a seed's weights do not "
                  "depend on the core count), seconds per float epoch: " + ", ".join(epochs) + "."
                  + "".join(f" The {name} pipeline end to end ({t['epochs']} float epoch(s), SIQ W4A4, export, "
                            f"four-way verification) takes {t['siq_end_to_end_seconds']} s."
                            for name, t in wall.items() if t.get("siq_end_to_end_seconds") is not None)]
    by_device = bench.get("fashion_epoch_seconds_by_device", {})
    if by_device:
        lines += ["", "One Fashion-MNIST float epoch of paper-mnist, per training device (`--device`): "
                  + ", ".join(f"{device} {seconds} s" for device, seconds in by_device.items()) + "."]
    if bench.get("networks"):
        lines += ["", *networks_table(bench["networks"], bench["cmsis_nn_anchors"])]
    return "\n".join(lines)


def networks_table(rows: list[dict], anchors: dict) -> list[str]:
    """`make bench`'s networks beside CMSIS-NN s8 (docs/results/cmsis-nn-anchors.json, its conditions named)."""
    c = anchors["conditions"]
    lines = [f"Networks: paper-mnist (the model above) and the MLPerf Tiny presets (random weights) on Cortex-M4, "
             f"counted like the CMSIS-NN anchors: "
             f"{c['library']}, {c['kernels'].split(' (')[0]}, {c['compiler']}, {c['board']}, {c['counting']}:", "",
             "| network | bits | MACs | instructions / inference | per MAC | CMSIS-NN s8 | × CMSIS-NN | model code "
             "| weights | activation RAM (CMSIS-NN) | ops on reference kernels |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        anchor = anchors["networks"].get(row["arch"], {})
        s8 = anchor.get("instructions_s8", {}).get(row["opt"])
        ram = anchor.get("activation_ram_bytes")
        count = row["instructions_per_inference"]
        bits = f"W{row['weight_bits']}A{row['act_bits']}" + (
            f", FC {row['fc_weight_bits']} bits" if row["fc_weight_bits"] != row["weight_bits"] else "")
        ratio = f"{count / s8:.2f}" if s8 else "–"
        lines.append(f"| {row['arch']} | {bits} | {_n(row['macs'])} | {_n(count)} | {count / row['macs']:.2f} | "
                     f"{_n(s8) if s8 else '–'} | {ratio} | {_n(row['code_bytes'])} B | {_n(row['weights_bytes'])} B | "
                     f"{_n(row['activation_ram_bytes'])} B ({_n(ram) + ' B' if ram else '–'}) | "
                     f"{', '.join(row['reference_kernel_ops']) or 'none'} |")
    return lines


def studies_index(studies_dir: Path) -> str:
    lines = ["| study | question | results |", "|---|---|---|"]
    for s in find_studies(studies_dir):
        names = s.results_files() + [entry.results for entry in s.fits
                                     if (studies_dir.parent / "results" / entry.results).is_file()]
        reports = [entry.options["report"] for entry in s.fits if "report" in entry.options
                   and (studies_dir.parent / entry.options["report"] / "README.md").is_file()]
        files = ", ".join([f"[{name}](results/{name})" for name in names] +
                          [f"[report]({folder}/README.md)" for folder in reports])
        lines.append(f"| [{s.name}](studies/{s.name}.toml) | {s.question} | {files} |")
    return "\n".join(lines)


def replace_between(text: str, marker: str, body: str) -> str:
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise SiqError(f"README: expected one {start} ... {end} pair")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def generate(readme_text: str, root: Path = ROOT) -> str:
    docs = root / "docs"
    text = replace_between(readme_text, "results", results_table(docs / "studies", docs / "results"))
    bench = json.loads((docs / "results" / "bench.json").read_text())
    return replace_between(text, "bench", bench_table(bench))


def generate_docs_readme(text: str, root: Path = ROOT) -> str:
    return replace_between(text, "studies", studies_index(root / "docs" / "studies"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rewrite the README's results and bench tables from committed "
                                                 "results")
    parser.add_argument("--check", action="store_true", help="only report whether README.md is current")
    parser.add_argument("--root", default=str(ROOT), help="the repository (README.md, docs/)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    stale = []
    for path, make in ((root / "README.md", generate), (root / "docs" / "README.md", generate_docs_readme)):
        current = path.read_text()
        wanted = make(current, root)
        if wanted != current:
            stale.append(path)
            if not args.check:
                path.write_text(wanted)
                print(f"{path} rewritten")
    if args.check and stale:
        print(f"{', '.join(map(str, stale))}: not what the committed results say: run python -m "
              "siq.training.experiments.readme", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
