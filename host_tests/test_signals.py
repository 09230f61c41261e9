"""SIGTERM and SIGHUP end a run like SIGINT: one line, status 128 + signal, and nothing left behind (no output
folder, no hidden `.out.xxxx` sibling, no siq-* temporary folder). `siq pipeline` runs in a subprocess on a tiny
configuration and gets the signal right after it prints the line that starts a step."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import tiny_arch
from siq.codegen.cli import main
from siq.codegen.cli.main import Terminated, _signals_raise

ROOT = Path(__file__).resolve().parents[1]

# (line that starts the step, the step the signal lands in)
POINTS = [("training tiny", "training"), ("float test accuracy", "quantizing"),
          ("integer test accuracy", "exporting"), ("exported", "verifying"), ("verify on", "the Cortex-M step")]


def run_until(tmp_path: Path, marker: str, sig: int) -> tuple[int, str, list[str]]:
    """Start the pipeline, send `sig` once a stdout line starts with `marker`; (status, stderr, stdout lines)."""
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(tiny_arch(lrn=False).to_dict()))
    tmp = tmp_path / "tmp"  # the child's temporary folders, so other processes' /tmp cannot confuse the check
    tmp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", TMPDIR=str(tmp))
    cmd = [sys.executable, "-m", "siq.codegen.cli", "pipeline", "--dataset", "digits", "--arch", str(arch),
           "--epochs", "3", "--method", "siq", "--siq-rounds", "1", "--siq-epochs", "1", "--cpu", "cortex-m4",
           "--target-images", "300", "--out", str(tmp_path / "out")]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             stdin=subprocess.DEVNULL, cwd=tmp_path)
    timer = threading.Timer(300, child.kill)  # a hung child fails the test instead of hanging it
    timer.start()
    lines = []
    try:
        for line in child.stdout:
            lines.append(line)
            if marker in line:
                child.send_signal(sig)
                break
        rest, err = child.communicate()
    finally:
        timer.cancel()
    return child.returncode, err, lines + rest.splitlines()


def leftovers(tmp_path: Path) -> list[str]:
    """Anything beside the inputs (the output folder, a hidden .out.xxxx sibling) and siq's temporary folders
    (torch keeps its own compile cache in TMPDIR: not siq's)."""
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in ("tiny.json", "tmp")) + \
        sorted(p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith(("siq", ".")))


@pytest.mark.parametrize("marker, step", POINTS)
def test_sigterm_during_a_pipeline_leaves_nothing(marker, step, tmp_path):
    status, err, out = run_until(tmp_path, marker, signal.SIGTERM)
    assert any(marker in line for line in out), (step, out, err)
    assert status == 143, (step, status, err)
    assert err.strip().splitlines() == ["siq: terminated by SIGTERM"], err
    assert leftovers(tmp_path) == [], step


def test_sighup_during_training_leaves_nothing(tmp_path):
    status, err, _ = run_until(tmp_path, "training tiny", signal.SIGHUP)
    assert status == 129 and err.strip().splitlines() == ["siq: terminated by SIGHUP"], err
    assert leftovers(tmp_path) == []


def test_in_process_handlers_are_restored(tmp_path, capsys):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(Terminated):
        with _signals_raise():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(500):  # the handler runs in this thread between two bytecodes
                time.sleep(0.01)
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert main(["eval", str(tmp_path / "missing.pt")]) == 2
    assert {sig: signal.getsignal(sig) for sig in before} == before
    capsys.readouterr()


def test_tempfile_honours_the_childs_tmpdir(tmp_path):
    """The leftovers check relies on TMPDIR reaching tempfile (siq makes its temporary folders there)."""
    env = dict(os.environ, TMPDIR=str(tmp_path))
    got = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"], env=env,
                         capture_output=True, text=True).stdout.strip()
    assert got == str(tmp_path) and tempfile.gettempdir() != str(tmp_path)
