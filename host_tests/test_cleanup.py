"""Temporary folders do not outlive the run that made them, and the target's chunking survives a chunk the
one-vector probe underestimated (the linker's "region FLASH overflowed by N bytes") without pointing at a
build.log that was already deleted."""
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_arch
from siq.codegen.export import write_sources
from siq.codegen.lower import lower
from siq.codegen.target import selftest
from siq.codegen.verify import verify
from siq.training.errors import SiqError
from siq.training.nets import Net
from siq.training.quantizers import QuantizeConfig, quantize_model


def test_verify_leaves_no_host_build_folder(digits, tmp_path, monkeypatch):
    torch.manual_seed(0)
    cfg = QuantizeConfig(method="uniform", calibration_images=100)
    qm = quantize_model(Net(tiny_arch()), digits.train_x, digits.train_y, cfg, digits.class_names)[0]
    lm = lower(qm)
    model_dir = tmp_path / "fw"
    model_dir.mkdir()
    write_sources(lm, model_dir)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where build_host's temporary folder goes
    result = verify(qm, lm, model_dir, digits.test_x[:30], digits.test_y[:30])
    assert result["mismatches"]["host_c"] == 0
    assert list(scratch.iterdir()) == []


MACROS = {"INPUT_BYTES": 4, "NUM_CLASSES": 2}  # 4 + 1 + 8 = 13 flash bytes per vector


def fake_target(monkeypatch, fits: int | None, calls: list):
    """build_elf that overflows the flash above `fits` vectors (None: fails with another error), run_elf that
    prints what the harness would for the vectors built."""
    built = {}

    def build_elf(model_dir, prefix, out_dir, cpu, board, opt, vectors, first_index=0):
        calls.append(len(vectors[0]))
        if fits is None:
            raise SiqError(f"cross-compiling x.c for {cpu} failed: boom (full log: {out_dir}/build.log)")
        if len(vectors[0]) > fits:
            over = 13 * (len(vectors[0]) - fits) - 5
            raise SiqError(f"linking the {board} firmware failed: ld: region `FLASH' overflowed by {over} bytes "
                           f"(full log: {out_dir}/build.log)")
        elf = Path(out_dir) / "firmware.elf"
        built[elf] = (vectors, first_index)
        return elf

    def run_elf(elf, board, timeout):
        (images, classes, scores), first = built[elf]
        lines = [" ".join(map(str, [first + i, classes[i], *scores[i]])) for i in range(len(images))]
        return 0, "\n".join(lines + ["mismatches 0"])

    monkeypatch.setattr(selftest, "build_elf", build_elf)
    monkeypatch.setattr(selftest, "run_elf", run_elf)
    monkeypatch.setattr(selftest, "model_macros", lambda model_dir, prefix: MACROS)


def vectors(n: int):
    rng = np.random.default_rng(0)
    scores = rng.integers(-100, 100, size=(n, 2))
    return rng.integers(0, 256, size=(n, 4), dtype=np.uint8), scores.argmax(axis=1), scores


def test_a_chunk_that_overflows_the_flash_is_retried_smaller(monkeypatch, tmp_path):
    calls = []
    fake_target(monkeypatch, fits=37, calls=calls)
    images, classes, scores = vectors(100)
    result = selftest.run_self_test(tmp_path, "m", "cortex-m0", None, images, classes, scores, chunk=40)
    assert result["mismatches"] == 0 and result["chunk_size"] <= 37
    assert np.array_equal(result["scores"], scores) and np.array_equal(result["classes"], classes)
    assert calls[0] == 40 and max(calls[1:]) <= 37 and sum(c for c in calls if c <= 37) == 100


def test_a_failed_build_in_a_temporary_folder_names_no_log(monkeypatch, tmp_path):
    fake_target(monkeypatch, fits=None, calls=[])
    images, classes, scores = vectors(5)
    with pytest.raises(SiqError) as err:
        selftest.run_self_test(tmp_path, "m", "cortex-m0", None, images, classes, scores, chunk=5)
    assert "boom" in str(err.value) and "build.log" not in str(err.value)
    with pytest.raises(SiqError, match="full log: .*build.log"):  # a kept work folder: its log is named
        selftest.run_self_test(tmp_path, "m", "cortex-m0", None, images, classes, scores, chunk=5,
                               work_dir=tmp_path / "work")


def test_flash_overflow_is_read_from_the_linkers_words():
    assert selftest.flash_overflow("ld: region `FLASH' overflowed by 4 bytes") == 4
    assert selftest.flash_overflow("ld: region 'FLASH' overflowed by 1 byte") == 1
    assert selftest.flash_overflow("ld: region `RAM' overflowed by 4 bytes") is None
