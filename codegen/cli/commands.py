"""One pair of functions per subcommand: `<name>_options(parser)` declares its options, `<name>(args)` runs it.

Commands are thin: turn the parsed options into Python values, call codegen/api.py (the same functions
`import siq` exposes) or the experiment code, print, and return the exit status (None = 0).
"""
from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

from siq.codegen import api, experiments
from siq.codegen.target.boards import DEFAULT_CPU
from siq.codegen.target.toolchain import require_toolchain, toolchain_status
from siq.codegen.fit.configfile import read_config
from siq.training.arch import PRESETS
from siq.training.errors import SiqError
from siq.training.fileio import check_output_file
from siq.training.quantizers import QuantizeConfig

from .options import add_backend, add_device, add_fit, fit_quant_config, option_name
from .options import (COUNT, RATE, SEED, add_calibration, add_channel_steps, add_codebook_bits, add_data,
                      add_distill, add_equalize, add_input_bits, add_per_channel, add_point_bits, add_quant,
                      add_siq_augment, add_siq_penalty, add_siq_schedule, add_train, bits, c_prefix, quant_config,
                      train_config, whole)


def arch_options(p):
    p.add_argument("arch", nargs="?", help="a preset name or a .toml/.json architecture file (default: list the "
                                           "presets with their totals)")


def arch(args):
    if args.arch is None:
        for name in PRESETS:
            size = api.model_size(name)
            print(f"{name:20s} input {'x'.join(map(str, size['input'])):10s} {size['macs']:>12,} MACs "
                  f"{size['parameters']:>10,} parameters")
        return
    print(api.model_size(args.arch)["table"])


def train_options(p):
    add_data(p)
    add_train(p)
    add_device(p)
    p.add_argument("--out", default="out/float.pt")


def train(args):
    check_output_file(args.out)  # before the options are turned into a schedule, as before any training
    api.train(args.dataset, arch=args.arch, out=args.out, config=train_config(args), data_dir=args.data_dir,
              split_seed=args.split_seed, device=args.device, allow_large=args.allow_large)


def import_options(p):
    p.add_argument("model", help="an ONNX file (.onnx) or a torch.export program (.pt2, torch.export.save)")
    p.add_argument("--dataset", required=True,
                   help="the data the model is quantized and verified on: npz:PATH, folder:PATH, digits, ...")
    p.add_argument("--data-dir", help="folder holding the dataset's files (fashion, mnist)")
    p.add_argument("--split-seed", type=SEED, default=0, help="seed of the train/test split where the dataset has none")
    p.add_argument("--out", default="out/float.pt")


def import_(args):
    check_output_file(args.out)
    api.import_model(args.model, dataset=args.dataset, out=args.out, data_dir=args.data_dir,
                     split_seed=args.split_seed)


def quantize_options(p):
    p.add_argument("checkpoint")
    add_quant(p)
    p.add_argument("--config", metavar="FILE",
                   help="the whole quantization configuration from a file (siq fit writes fit-config.json); "
                        "no other quantization option may be given with it")
    add_device(p)
    p.add_argument("--out", default="out/quantized.pt")


# QuantizeConfig fields whose command-line options are spelled otherwise
_QUANT_OPTIONS = {"conv_bits": "--weight-bits", "seed": "--quant-seed", "siq": "the --siq-* options",
                  "plus": "the siq+ options (--distill, --plus-off, ...)"}


def quantize(args):
    check_output_file(args.out)
    cfg = quant_config(args)
    if args.config is not None:
        given = [_QUANT_OPTIONS.get(f.name, option_name(f.name)) for f in fields(cfg)
                 if getattr(cfg, f.name) != getattr(QuantizeConfig(), f.name)]
        if given:
            raise SiqError(f"--config gives the whole configuration: drop {', '.join(given)} (or edit the file)")
        cfg = read_config(args.config)
    api.quantize(args.checkpoint, cfg, out=args.out, device=args.device)


def fit_options(p):
    add_data(p)
    add_train(p)
    add_fit(p)
    add_device(p)
    p.add_argument("--out", default="out/fit")
    p.add_argument("--cache-dir", default=".siq_cache", help="where layer sensitivities are kept between runs")
    p.add_argument("--force", action="store_true", help="replace an output folder holding other files")


def fit(args):
    result = api.fit(args.out, flash=args.flash, ram=args.ram, insns=args.insns, cpu=args.cpu,
                     dataset=args.dataset, arch=args.arch, method=args.method, quant_cfg=fit_quant_config(args),
                     train_cfg=train_config(args), widths=args.widths,
                     per_channel=(False,) if args.no_per_channel else (False, True), solver=args.solver,
                     validation=args.validation, data_dir=args.data_dir, split_seed=args.split_seed,
                     cache_dir=args.cache_dir, force=args.force, device=args.device, allow_large=args.allow_large,
                     act_widths=args.act_widths)
    print(f"config: {Path(args.out) / 'fit-config.json'}; report: {Path(args.out) / 'report.md'}")
    return 0 if result is not None else 1


def eval_options(p):
    p.add_argument("model")


def eval_(args):
    result = api.evaluate(args.model)
    if result["kind"] == "float":
        print(f"float test accuracy {result['accuracy']:.4f} on {result['n_test']} images ({result['dataset']})")
    else:
        print(f"integer reference test accuracy {result['accuracy']:.4f} on {result['n_test']} images "
              f"({result['dataset']}); float was {result['float_accuracy']}")


def export_options(p):
    p.add_argument("model")
    p.add_argument("--out", default="out/firmware")
    p.add_argument("--prefix", type=c_prefix, default="siq_model")
    p.add_argument("--vectors", type=whole(0, what="--vectors"), default=100, help="test images embedded for on-target self tests")
    p.add_argument("--force", action="store_true", help="replace an output folder holding other files")


def export(args):
    api.export(args.model, args.out, prefix=args.prefix, vectors=args.vectors, force=args.force)


def verify_options(p):
    p.add_argument("dir")
    p.add_argument("--prefix", type=c_prefix, default="siq_model")


def verify(args):
    result = api.verify(args.dir, prefix=args.prefix)
    return 1 if result["mismatches"]["torch_quant"] or result["mismatches"]["host_c"] else 0


def pipeline_options(p):
    add_data(p)
    add_train(p)
    add_quant(p)
    add_device(p)
    p.add_argument("--out", default="out")
    p.add_argument("--prefix", type=c_prefix, default="siq_model")
    p.add_argument("--cpu", default=None, help=f"Cortex-M core for the target step (default {DEFAULT_CPU})")
    p.add_argument("--board", default=None)
    p.add_argument("--target-images", type=COUNT, default=None,
                   help="test images the Cortex-M step runs (default: 1000, or the whole test split if smaller)")
    p.add_argument("--no-target", action="store_true", help="skip the Cortex-M step")
    p.add_argument("--force", action="store_true")


def pipeline(args):
    cpu = None if args.no_target else (args.cpu or DEFAULT_CPU)
    if cpu is not None and not toolchain_status()["ok"]:
        if args.cpu is not None:  # asked for by name: say what is missing instead of skipping
            require_toolchain()
        print("siq: note: arm-none-eabi-gcc / qemu-system-arm not found, skipping the Cortex-M step "
              "(make setup installs them)", file=sys.stderr)
        cpu = None
    report = api.pipeline(args.out, dataset=args.dataset, arch=args.arch, train_cfg=train_config(args),
                          quant_cfg=quant_config(args), prefix=args.prefix, data_dir=args.data_dir,
                          split_seed=args.split_seed, force=args.force, cpu=cpu, board=args.board,
                          target_images=args.target_images, device=args.device, allow_large=args.allow_large)
    print(f"report: {Path(args.out) / 'report.md'}")
    bad = report["mismatches"]["torch_quant"] + report["mismatches"]["host_c"]
    bad += report.get("target", {}).get("mismatches", 0)
    return 1 if bad else 0


def target_options(p):
    p.add_argument("dir")
    p.add_argument("--cpu", default=DEFAULT_CPU)
    p.add_argument("--board", default=None)
    p.add_argument("--prefix", type=c_prefix, default="siq_model")
    p.add_argument("--opt", default="-O2")
    p.add_argument("--images", type=COUNT, default=None, help="test images to run (default: the whole test split)")


def target(args):
    result = api.target(args.dir, cpu=args.cpu, board=args.board, prefix=args.prefix, opt=args.opt,
                        images=args.images)
    return 1 if result["mismatches"] else 0


def sweep_options(p):
    add_data(p)
    add_train(p)
    p.add_argument("--methods", default="uniform,kmeans,siq")
    p.add_argument("--weight-bits", default="1-4", help="e.g. 1-8,float")
    p.add_argument("--act-bits", default="1-4", help="e.g. 1-4,float")
    add_input_bits(p)
    p.add_argument("--fc-bits", type=bits, default=8)
    p.add_argument("--seeds", default="0")
    p.add_argument("--jobs", type=COUNT, default=1)
    add_siq_schedule(p)
    add_siq_penalty(p)
    add_siq_augment(p)
    add_distill(p)
    add_calibration(p)
    add_per_channel(p)
    add_channel_steps(p)
    add_equalize(p)
    add_point_bits(p)
    add_codebook_bits(p)
    p.add_argument("--train-size", type=COUNT, help="budgeted run: a stratified subset of this many training images")
    p.add_argument("--test-size", type=COUNT, help="budgeted run: a stratified subset of this many test images")
    p.add_argument("--validation", type=RATE, metavar="FRACTION",
                   help="tune: hold out this fraction of the training data and score on it (never the test split)")
    p.add_argument("--out", default="out/sweep.jsonl")
    p.add_argument("--cache-dir", default=".siq_cache")
    add_device(p)
    add_backend(p)


def sweep(args):
    return experiments.sweep_command(args)


def report_options(p):
    p.add_argument("results", nargs="+")
    p.add_argument("--out", default="out/report")
    p.add_argument("--title", default="siq sweep")
    p.add_argument("--act-bits", type=bits, default=4, help="activation bits of the Fig. 4 analogue")


def report(args):
    return experiments.report_command(args)


def study_options(p):
    p.add_argument("action", choices=("run", "list", "report"))
    p.add_argument("studies", nargs="*", help="study files (default: every docs/studies/*.toml); list: folders")
    p.add_argument("--cache-dir", default=".siq_cache")
    p.add_argument("--jobs", type=COUNT, default=1)
    p.add_argument("--results-dir", help="results folder (default: docs/results beside the study's folder)")
    add_device(p)
    add_backend(p)


def study(args):
    return experiments.study_command(args)
