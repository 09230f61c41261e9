"""siq command line: train, quantize, eval, export, verify, pipeline, target, sweep, report, study.

Every user error ends as one line on stderr ("siq: error: ...") and exit status 2; nothing half-written stays.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from siq.training.errors import SiqError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise SiqError(f"{self.prog}: {message} (see --help)")


def bits(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bit width must be a whole number from 1 to 8, got {text!r}") from None
    if not 1 <= value <= 8:
        raise argparse.ArgumentTypeError(f"bit width must be from 1 to 8, got {value}")
    return value


def layer_bits(text: str) -> dict[int, int]:
    """'0=4,4=3' -> {0: 4, 4: 3} (architecture layer index = weight bits)."""
    out = {}
    for part in filter(None, text.split(",")):
        try:
            index, value = part.split("=")
            out[int(index)] = bits(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--layer-bits wants INDEX=BITS[,INDEX=BITS...], got {part!r}") from None
    return out


def _add_data(p, default_dataset="mnist5k"):
    from siq.training.data import DATASETS
    p.add_argument("--dataset", default=default_dataset, help=f"one of {', '.join(DATASETS)} (default %(default)s)")
    p.add_argument("--data-dir", help="folder holding the dataset's files (fashion, mnist)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split where the dataset has none")


def _add_train(p):
    p.add_argument("--arch", default="paper-mnist", help="preset (paper-mnist, paper-office) or .toml/.json file")
    p.add_argument("--epochs", type=int, help="default: the dataset's documented schedule")
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--augment-shift", type=int, help="random translation in pixels during training")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="mirror training images left-right at random (default: the dataset's schedule)")
    p.add_argument("--dropout", type=float, help="training dropout rate instead of the architecture's")
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--weight-decay", type=float, help="decoupled weight decay (AdamW)")
    p.add_argument("--seed", type=int, default=0)


def _add_quant(p):
    from siq.training.quantizers import METHODS
    p.add_argument("--method", default="siq", choices=sorted(METHODS))
    p.add_argument("--weight-bits", type=bits, default=4, help="conv kernel bits (default %(default)s)")
    p.add_argument("--act-bits", type=bits, default=4, help="input and feature-map bits (default %(default)s)")
    _add_input_bits(p)
    p.add_argument("--fc-bits", type=bits, default=8, help="fully connected layer bits (default %(default)s)")
    p.add_argument("--layer-bits", type=layer_bits, default={}, help="per-layer override, e.g. 0=4,4=3")
    p.add_argument("--codebook-bits", type=int, default=8,
                   help="fixed-point bits of codebook values (2..15; above 8 the C stores them as int16)")
    p.add_argument("--siq-rounds", type=int, default=4, help="maximum SIQ rounds")
    p.add_argument("--siq-lr", type=float, default=3e-4, help="Adam learning rate of SIQ's retraining")
    p.add_argument("--siq-epochs", type=int, default=2, help="retraining epochs per SIQ round")
    p.add_argument("--siq-fc", action="store_true", help="retrain the FC layers' codebooks too (beyond the paper)")
    _add_siq_penalty(p)
    _add_siq_augment(p)
    _add_calibration(p)
    _add_per_channel(p)
    p.add_argument("--quant-seed", type=int, default=0)
    p.add_argument("--plus-off", default="", help="siq+ ingredients to turn off (ablation), from: "
                   "fc,centroids,distill,progressive,steps")
    _add_distill(p)


def _add_distill(p):
    p.add_argument("--distill", type=float, default=None, metavar="WEIGHT",
                   help="siq+: weight of the distillation term against the float network, in [0, 1] (0 = off; "
                        "default 0.5)")
    p.add_argument("--distill-temperature", type=float, default=None, metavar="T",
                   help="siq+: softmax temperature of the distillation term (default 4)")
    p.add_argument("--real-steps", action="store_true",
                   help="siq+: train the feature-map steps as real numbers, then fold them into the layers around "
                        "them so the firmware stays shift-only (default: power-of-two steps throughout)")
    p.add_argument("--progressive-acts", type=int, default=None, metavar="N",
                   help="siq+: start the activations N bits above the target and lower them one bit a round "
                        "(default 0: the target width from the first round)")


def _add_input_bits(p):
    p.add_argument("--input-bits", type=bits, default=None,
                   help="input image bits when they differ from --act-bits (e.g. 8: the sensor's pixels as they "
                        "come; default: --act-bits, as in the paper)")


def _add_calibration(p):
    from siq.training.quant import CALIBRATION_RULES
    p.add_argument("--calibration", choices=CALIBRATION_RULES, default="float",
                   help="activation-shift rule: on the float network's tensors, or point by point on the tensors "
                        "the quantized points before it produce (default %(default)s)")


def _add_per_channel(p):
    from siq.training.quantizers import PER_CHANNEL_CHOICES
    p.add_argument("--per-channel", choices=PER_CHANNEL_CHOICES, default="none",
                   help="one codebook per output channel (a row of 2^bits values each, same fixed-point exponent) "
                        "for the conv layers or all layers, instead of one per layer (default %(default)s)")


def _add_siq_penalty(p):
    p.add_argument("--siq-alpha", type=float, default=None,
                   help="weight of the continuation penalty ||w - Q(w)||^2 / ||w||^2 in the first retraining round "
                        "(default 0.1)")
    p.add_argument("--siq-growth", type=float, default=None,
                   help="factor by which that penalty's weight grows each round (default 4)")


def _add_siq_augment(p):
    p.add_argument("--siq-augment-shift", type=int, default=0,
                   help="random translation in pixels during SIQ retraining (default: none, as in the paper)")
    p.add_argument("--siq-flip", action="store_true", help="random left-right flips during SIQ retraining")
    p.add_argument("--siq-dropout", type=float, default=None,
                   help="dropout rate during SIQ retraining (default: the architecture's, whatever --dropout the "
                        "float network was trained with)")


def siq_config(args):
    from siq.training.quantizers import SIQConfig, check_siq_config
    penalty = {k: getattr(args, a) for k, a in (("alpha", "siq_alpha"), ("growth", "siq_growth"))
               if getattr(args, a) is not None}
    cfg = SIQConfig(rounds=args.siq_rounds, epochs_per_round=args.siq_epochs, lr=args.siq_lr,
                    quantize_fc=getattr(args, "siq_fc", False), augment_shift=args.siq_augment_shift,
                    augment_flip=args.siq_flip, dropout=args.siq_dropout, **penalty)
    check_siq_config(cfg)
    return cfg


def train_config(args):
    from dataclasses import replace

    from .pipeline import default_schedule
    cfg = default_schedule(args.dataset)
    overrides = {k: getattr(args, a) for k, a in (("epochs", "epochs"), ("lr", "lr"), ("batch_size", "batch_size"),
                                                 ("augment_shift", "augment_shift"), ("augment_flip", "flip"),
                                                 ("dropout", "dropout"), ("label_smoothing", "label_smoothing"),
                                                 ("weight_decay", "weight_decay")) if getattr(args, a) is not None}
    if overrides.get("epochs", 1) < 1:
        raise SiqError("--epochs must be at least 1")
    if not 0.0 <= overrides.get("dropout", 0.0) < 1.0:
        raise SiqError(f"--dropout must be in [0, 1), got {overrides['dropout']}")
    if not 0.0 <= overrides.get("label_smoothing", 0.0) < 1.0:
        raise SiqError(f"--label-smoothing must be in [0, 1), got {overrides['label_smoothing']}")
    if overrides.get("weight_decay", 0.0) < 0.0:
        raise SiqError(f"--weight-decay must be >= 0, got {overrides['weight_decay']}")
    return replace(cfg, seed=args.seed, **overrides)


def plus_config(args, off=()):
    """siq+'s ingredients from --distill / --distill-temperature (and --plus-off where the command has it)."""
    from dataclasses import replace

    from siq.training.quantizers import SIQPlusConfig, check_plus_config
    try:
        plus = SIQPlusConfig().without(off)
    except SiqError as exc:
        raise SiqError(f"--plus-off: {exc}") from None
    if args.distill is not None:
        if "distill" in off:
            raise SiqError("--distill: the distillation term is turned off by --plus-off distill")
        plus = replace(plus, distill=args.distill)
    if args.distill_temperature is not None:
        plus = replace(plus, temperature=args.distill_temperature)
    if args.real_steps:
        if "steps" in off:
            raise SiqError("--real-steps: the learned activation steps are turned off by --plus-off steps")
        plus = replace(plus, real_steps=True)
    if args.progressive_acts is not None:
        if args.progressive_acts and ("steps" in off or "progressive" in off):
            raise SiqError("--progressive-acts: the learned activation steps or progressive lowering are turned "
                           "off by --plus-off")
        plus = replace(plus, progressive_acts=args.progressive_acts)
    check_plus_config(plus)
    return plus


def quant_config(args):
    from siq.training.quant import check_codebook_bits
    from siq.training.quantizers import QuantizeConfig
    check_codebook_bits(args.codebook_bits)
    off = [x.strip() for x in args.plus_off.split(",") if x.strip()]
    plus = plus_config(args, off)
    return QuantizeConfig(method=args.method, plus=plus, conv_bits=args.weight_bits, fc_bits=args.fc_bits,
                          layer_bits=args.layer_bits, act_bits=args.act_bits, codebook_bits=args.codebook_bits,
                          seed=args.quant_seed, siq=siq_config(args), calibration=args.calibration,
                          per_channel=args.per_channel, input_bits=args.input_bits)


# ---------------------------------------------------------------- commands

def cmd_train(args):
    from siq.training.fileio import check_output_file

    from .pipeline import step_train
    check_output_file(args.out)  # before training, not after
    step_train(args.dataset, args.arch, train_config(args), Path(args.out), args.data_dir, args.split_seed)


def cmd_quantize(args):
    from siq.training.fileio import check_output_file
    from siq.training.train import load_checkpoint

    check_output_file(args.out)
    config = quant_config(args)  # every option is checked before the checkpoint and data are loaded

    from .pipeline import load_for_model, step_quantize
    net, meta = load_checkpoint(args.checkpoint)
    data = load_for_model(meta, net.arch)
    step_quantize(net, meta, data, config, Path(args.out))


def cmd_eval(args):
    from siq.training.integer import integer_scores
    from siq.training.quant import load_quantized
    from siq.training.train import accuracy, load_checkpoint, predict_scores

    from .lower import lower
    from .pipeline import load_for_model
    path = Path(args.model)
    if _kind(path) == "checkpoint":
        net, meta = load_checkpoint(path)
        data = load_for_model(meta, net.arch)
        acc = accuracy(predict_scores(net, data.test_x), data.test_y, data.test_groups)
        print(f"float test accuracy {acc:.4f} on {len(data.test_x)} images ({data.name})")
    else:
        qm = load_quantized(path)
        data = load_for_model(qm.meta.get("dataset", {}), qm.arch)
        scores = integer_scores(lower(qm).integer, data.test_x)
        acc = accuracy(scores, data.test_y, data.test_groups)
        print(f"integer reference test accuracy {acc:.4f} on {len(data.test_x)} images ({data.name}); "
              f"float was {qm.meta.get('float_accuracy')}")


def _kind(path: Path) -> str:
    from siq.training.fileio import load_torch
    try:
        load_torch(path, "checkpoint")
        return "checkpoint"
    except SiqError as first:
        try:
            load_torch(path, "quantized")
            return "quantized"
        except SiqError:
            raise first from None


def cmd_export(args):
    from siq.training.quant import load_quantized

    from .pipeline import load_for_model, step_export
    qm = load_quantized(args.model)
    data = load_for_model(qm.meta.get("dataset", {}), qm.arch) if args.vectors else None
    step_export(qm, Path(args.out), args.prefix, data, args.vectors, args.force)


def cmd_verify(args):
    from siq.training.quant import load_quantized

    from .lower import lower
    from .pipeline import load_for_model, step_verify
    directory = Path(args.dir)
    qm = load_quantized(directory / "quantized.pt")
    lm = lower(qm, args.prefix)
    if not (directory / f"{args.prefix}.c").is_file():
        raise SiqError(f"{directory} holds no {args.prefix}.c: pass the folder written by siq export (or --prefix)")
    data = load_for_model(qm.meta.get("dataset", {}), qm.arch)
    result = step_verify(qm, lm, directory, data)
    if result["mismatches"]["torch_quant"] or result["mismatches"]["host_c"]:
        return 1


def cmd_pipeline(args):
    from .pipeline import run_pipeline
    cpu = None if args.no_target else args.cpu
    if cpu is not None:
        from .target import toolchain_status
        if not toolchain_status()["ok"]:
            if args.cpu_explicit:
                from .target import require_toolchain
                require_toolchain()
            print("siq: note: arm-none-eabi-gcc / qemu-system-arm not found, skipping the Cortex-M step "
                  "(make setup installs them)", file=sys.stderr)
            cpu = None
    report = run_pipeline(Path(args.out), args.dataset, args.arch, quant_config(args), train_config(args),
                          args.prefix, args.data_dir, args.split_seed, args.force, cpu, args.board,
                          args.target_images)
    print(f"report: {Path(args.out) / 'report.md'}")
    bad = report["mismatches"]["torch_quant"] + report["mismatches"]["host_c"]
    bad += report.get("target", {}).get("mismatches", 0)
    return 1 if bad else 0


def cmd_target(args):
    from .target import run_target_command
    return run_target_command(args)


def cmd_sweep(args):
    from .experiments import sweep_command
    return sweep_command(args)


def cmd_study(args):
    from .experiments import study_command
    return study_command(args)


def cmd_report(args):
    from .experiments import report_command
    return report_command(args)


def build_parser() -> argparse.ArgumentParser:
    from siq import __version__
    parser = Parser(prog="siq", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"siq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train", help="train the float network")
    _add_data(p)
    _add_train(p)
    p.add_argument("--out", default="out/float.pt")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("quantize", help="quantize a trained checkpoint (uniform, kmeans or siq)")
    p.add_argument("checkpoint")
    _add_quant(p)
    p.add_argument("--out", default="out/quantized.pt")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("eval", help="test accuracy of a checkpoint (float) or quantized model (integer reference)")
    p.add_argument("model")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="generate the C sources, test vectors and report of a quantized model")
    p.add_argument("model")
    p.add_argument("--out", default="out/firmware")
    p.add_argument("--prefix", default="siq_model")
    p.add_argument("--vectors", type=int, default=100, help="test images embedded for on-target self tests")
    p.add_argument("--force", action="store_true", help="replace an output folder holding other files")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("verify", help="build an export on the host and check it bit for bit on the test split")
    p.add_argument("dir")
    p.add_argument("--prefix", default="siq_model")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("pipeline", help="the main job: train -> quantize -> export -> verify -> Cortex-M")
    _add_data(p)
    _add_train(p)
    _add_quant(p)
    p.add_argument("--out", default="out")
    p.add_argument("--prefix", default="siq_model")
    p.add_argument("--cpu", default=None, help="Cortex-M core for the target step (default cortex-m4)")
    p.add_argument("--board", default=None)
    p.add_argument("--target-images", type=int, default=1000)
    p.add_argument("--no-target", action="store_true", help="skip the Cortex-M step")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("target", help="cross-build an export for Cortex-M, run it in QEMU, check it bit for bit")
    p.add_argument("dir")
    p.add_argument("--cpu", default="cortex-m4")
    p.add_argument("--board", default=None)
    p.add_argument("--prefix", default="siq_model")
    p.add_argument("--opt", default="-O2")
    p.add_argument("--images", type=int, default=None, help="test images to run (default: the whole test split)")
    p.set_defaults(func=cmd_target)

    p = sub.add_parser("sweep", help="accuracy over methods x weight bits x activation bits")
    _add_data(p)
    _add_train(p)
    p.add_argument("--methods", default="uniform,kmeans,siq")
    p.add_argument("--weight-bits", default="1-4", help="e.g. 1-8,float")
    p.add_argument("--act-bits", default="1-4", help="e.g. 1-4,float")
    _add_input_bits(p)
    p.add_argument("--fc-bits", type=bits, default=8)
    p.add_argument("--seeds", default="0")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--siq-rounds", type=int, default=4)
    p.add_argument("--siq-lr", type=float, default=3e-4)
    p.add_argument("--siq-epochs", type=int, default=2)
    _add_siq_penalty(p)
    _add_siq_augment(p)
    _add_distill(p)
    _add_calibration(p)
    _add_per_channel(p)
    p.add_argument("--codebook-bits", type=int, default=8,
                   help="fixed-point bits of codebook values (2..15; above 8 the C stores them as int16)")
    p.add_argument("--train-size", type=int, help="budgeted run: a stratified subset of this many training images")
    p.add_argument("--test-size", type=int, help="budgeted run: a stratified subset of this many test images")
    p.add_argument("--validation", type=float, metavar="FRACTION",
                   help="tune: hold out this fraction of the training data and score on it (never the test split)")
    p.add_argument("--out", default="out/sweep.jsonl")
    p.add_argument("--cache-dir", default=".siq_cache")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="tables and plots (Table 1, Fig. 4, Fig. 5 analogues) from sweep results")
    p.add_argument("results", nargs="+")
    p.add_argument("--out", default="out/report")
    p.add_argument("--title", default="siq sweep")
    p.add_argument("--act-bits", type=bits, default=4, help="activation bits of the Fig. 4 analogue")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("study", help="run, list or report the studies (docs/studies/*.toml: experiments as data)")
    p.add_argument("action", choices=("run", "list", "report"))
    p.add_argument("studies", nargs="*", help="study files (default: every docs/studies/*.toml); list: folders")
    p.add_argument("--cache-dir", default=".siq_cache")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--results-dir", help="results folder (default: docs/results beside the study's folder)")
    p.set_defaults(func=cmd_study)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command == "pipeline":
            args.cpu_explicit = args.cpu is not None
            args.cpu = args.cpu or "cortex-m4"
        return int(args.func(args) or 0)
    except SiqError as exc:
        print(f"siq: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("siq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
