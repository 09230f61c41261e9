"""siq command line: one subcommand per step of the pipeline (SUBCOMMANDS), each calling the Python API.

Every user error ends as one line on stderr ("siq: error: ...") and exit status 2; nothing half-written stays.
SIGINT, SIGTERM and SIGHUP end a run the same way: the temporary outputs and folders are removed (their
context managers unwind), one line, and the conventional status 128 + signal number (130, 143, 129).
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

import siq.codegen.cli.commands as commands
from siq.training.errors import SiqError
from siq.version import __version__

EXIT_USAGE = 2

# Every subcommand, in the order `siq --help` lists them: (name, one-line help, declares its options, runs it).
# A new subcommand is one row here and its pair of functions (see commands.py).
SUBCOMMANDS = (
    ("arch", "an architecture's layers: output shape, MACs and parameters per layer, and totals",
     commands.arch_options, commands.arch),
    ("train", "train the float network", commands.train_options, commands.train),
    ("import", "import a trained ONNX (.onnx) or torch.export (.pt2) model as a siq checkpoint",
     commands.import_options, commands.import_),
    ("quantize", "quantize a trained checkpoint (uniform, kmeans or siq)", commands.quantize_options,
     commands.quantize),
    ("eval", "test accuracy of a checkpoint (float) or quantized model (integer reference)", commands.eval_options,
     commands.eval_),
    ("export", "generate the C sources, test vectors and report of a quantized model", commands.export_options,
     commands.export),
    ("verify", "build an export on the host and check it bit for bit on the test split", commands.verify_options,
     commands.verify),
    ("pipeline", "the main job: train -> quantize -> export -> verify -> Cortex-M", commands.pipeline_options,
     commands.pipeline),
    ("target", "cross-build an export for Cortex-M, run it in QEMU, check it bit for bit", commands.target_options,
     commands.target),
    ("sweep", "accuracy over methods x weight bits x activation bits", commands.sweep_options, commands.sweep),
    ("report", "tables and plots (Table 1, Fig. 4, Fig. 5 analogues) from sweep results", commands.report_options,
     commands.report),
    ("fit", "per-layer bit widths chosen for the most accurate model within a flash, RAM and time budget",
     commands.fit_options, commands.fit),
    ("study", "run, list or report the studies (docs/studies/*.toml: experiments as data)", commands.study_options,
     commands.study),
)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise SiqError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="siq", description="siq: train, quantize and export integer-only C for Cortex-M; "
                                            "the subcommands below, each with its own --help")
    parser.add_argument("--version", action="version", version=f"siq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, help_text, add_options, run in SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text)
        add_options(p)
        p.set_defaults(func=run)
    return parser


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM / SIGHUP; a BaseException, like KeyboardInterrupt, so that no
    `except Exception` swallows it and every cleanup on the way out runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, frame):
    for sig in _HANDLED:  # a second signal must not cut the cleanup the first one started
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signum)


_HANDLED = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals_raise():
    """SIGTERM and SIGHUP raise Terminated for the duration (main thread only; handlers restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _terminate) for sig in _HANDLED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# Every character str.splitlines() breaks a line at (a path may hold any of them)
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def one_line(text: str) -> str:
    """The message on one line: a line break inside it (from a path) is shown escaped (\\n, \\x1e, ...)."""
    return "".join(repr(ch)[1:-1] if ch in LINE_BREAKS else ch for ch in text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        with _signals_raise():
            for a in argv:  # a shell cannot pass a NUL byte; only main([...]) from Python can
                if "\x00" in a:
                    name = a.split("=", 1)[0] if a.startswith("--") else "an argument"
                    raise SiqError(f"{name} holds a NUL byte")
                if a.startswith("--") and a.endswith("=--"):  # argparse drops a value of "--", leaving []
                    raise SiqError(f"{a[:-3]} needs a value, not '--'")
            args = build_parser().parse_args(argv)
            return int(args.func(args) or 0)
    except SiqError as exc:
        print(f"siq: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a path the system refuses (name too long, ...) where no check named it first
        where = f"{one_line(str(exc.filename))}: " if exc.filename is not None else ""
        print(f"siq: error: {where}{exc.strerror or exc}: choose another path", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("siq: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated as exc:
        print(f"siq: terminated by {signal.Signals(exc.signum).name}", file=sys.stderr)
        return 128 + exc.signum
