"""Fuzz the command line: for every subcommand and every numeric or path option (read from the parser itself,
so a new option is fuzzed without a change here), hypothesis draws bad values (NaN, +-Inf, negative, zero,
huge, fractions, words, empty, NUL bytes, impossible paths, prefixes that are no C identifier) and siq must answer with one `siq: error:` line,
exit status 2, no traceback, and nothing written.

Each command line also carries a fault found only after option parsing (a data set, file or folder that does
not exist), so that a value that happens to be valid ends in the same refusal instead of starting a run. In
process (codegen.cli.main): an uncaught exception fails the test. Bounded: a few hundred examples, seconds."""
import contextlib
import os
import re
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siq.codegen.cli import build_parser, main

# A refusal that comes after the options are parsed and checked: the fuzzed value is checked first.
BASE = {
    "arch": ["missing.toml"],
    "train": ["--dataset", "nope"],
    "quantize": ["missing.pt"],
    "eval": ["missing.pt"],
    "export": ["missing.pt"],
    "verify": ["missing-folder"],
    "pipeline": ["--dataset", "nope", "--no-target"],
    "target": ["missing-folder"],
    "sweep": ["--dataset", "nope"],
    "report": ["missing.jsonl"],
    "study": ["run", "missing.toml"],
    "fit": ["--dataset", "nope", "--flash", "8KB"],
    "import": ["missing.onnx", "--dataset", "nope"],
}
PATH_OPTIONS = {"--out", "--data-dir", "--cache-dir", "--results-dir", "--arch"}


def fuzzed_options() -> dict[str, list[str]]:
    """Subcommand -> its options that take a number or a path."""
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    out = {}
    for name, sub in subcommands.items():
        out[name] = sorted(o for a in sub._actions for o in a.option_strings
                           if o.startswith("--") and a.nargs != 0 and a.choices is None
                           and (o in PATH_OPTIONS or a.type not in (None, str)))
    return {name: options for name, options in out.items() if options}


OPTIONS = fuzzed_options()
# the positional file or folder each command reads: fuzzed with the bad paths, the rest of BASE kept
POSITIONAL = {"arch": 0, "quantize": 0, "eval": 0, "export": 0, "verify": 0, "target": 0, "report": 0, "study": 1,
              "import": 0}
# No option takes these: they must be refused by the option's own check (its name in the message), not by the
# fault BASE adds later.
NEVER_VALID = ("--", "nan", "NaN", "inf", "-inf", "+inf", "1e400", "-1e400", "four", "1,2", "Infinity")
NUMBERS = st.one_of(
    st.sampled_from(NEVER_VALID),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "+inf", "1e400", "-1e400", "0", "-0", "-1", "-4", "0.5", "1.5",
                     "-0.1", "99999999999999999999", "-99999999999999999999", "1e-320", "0x10", "1_0", "four", "",
                     " ", "1,2", "=", "\x00", "1e9", "2147483648", "4294967296"]),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6))
PREFIXES = st.one_of(st.sampled_from(["--", "", "1bad", "a-b", "Model", "x y", "é", "a\nb", "abc\n", "-1", "0x"]),
                     st.text(max_size=6).filter(lambda t: not re.fullmatch(r"[a-z_][a-z0-9_]*", t)))
PATHS = st.sampled_from(["", ".", "..", "/", "/proc/siq-x/f", "/proc/siq-x", "/dev/null/x", "/sys/siq.pt",
                         "a\x00b", "x" * 300, "missing/../../x", "-", "~nobody/x"])


@contextlib.contextmanager
def in_empty_folder():
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="siq-fuzz-") as folder:
        os.chdir(folder)
        try:
            yield folder
        finally:
            os.chdir(previous)


def test_every_fuzzed_option_is_a_real_option():
    assert set(OPTIONS) | set(POSITIONAL) == set(BASE)
    assert "--lr" in OPTIONS["train"] and "--vectors" in OPTIONS["export"] and "--images" in OPTIONS["target"]
    assert "--out" in OPTIONS["pipeline"] and "--target-images" in OPTIONS["pipeline"]
    assert sum(map(len, OPTIONS.values())) >= 60


@settings(max_examples=1000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_bad_option_values_get_one_line(data, capsys):
    command = data.draw(st.sampled_from(sorted(OPTIONS)), label="command")
    option = data.draw(st.sampled_from(OPTIONS[command]), label="option")
    values = PATHS if option in PATH_OPTIONS else PREFIXES if option == "--prefix" else NUMBERS
    value = data.draw(st.one_of(st.just("--"), values), label="value")  # argparse reads "--opt=--" as []
    with in_empty_folder() as folder:
        code = main([command, *BASE[command], f"{option}={value}"])
        left = os.listdir(folder)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("siq: error:"), (command, option, value, err)
    assert left == [], (command, option, value, left)
    if value in NEVER_VALID or option == "--prefix":
        assert option in err[0], (command, option, value, err)


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_bad_input_paths_get_one_line(data, capsys):
    command = data.draw(st.sampled_from(sorted(POSITIONAL)), label="command")
    value = data.draw(st.one_of(PATHS, st.text(max_size=8)), label="path")
    argv = list(BASE[command])
    argv[POSITIONAL[command]] = value
    with in_empty_folder() as folder:
        code = main([command, *argv])
        left = os.listdir(folder)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("siq: error:"), (command, value, err)
    assert left == [], (command, value, left)
