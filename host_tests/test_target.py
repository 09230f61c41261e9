"""Target tooling on the hand-written dummy model: cross-build, QEMU self-test, instruction counts, footprint.

Needs arm-none-eabi-gcc, qemu-system-arm and a host cc; a missing toolchain fails these tests (SiqError),
it never skips them. The dummy model (fixtures/dummy_model/siq_dummy.c) has a numpy twin below.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from siq.codegen import target
from siq.codegen.target import step as target_step
from siq.codegen.vectors import write_test_vectors
from siq.training.errors import SiqError

DUMMY = Path(__file__).parent / "fixtures" / "dummy_model"
PREFIX = "siq_dummy"
N_IMAGES = 40

# The same constants as siq_dummy.c: weights[k][i] = (7k + 5i) mod 11 - 5, bias[k] = 100k - 150.
WEIGHTS = (7 * np.arange(3)[:, None] + 5 * np.arange(16)[None, :]) % 11 - 5
BIAS = 100 * np.arange(3) - 150


def siq_dummy_infer(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Numpy twin of siq_dummy_infer: (classes [N], scores [N, 3]) for uint8 images [N, 64]."""
    pooled = images.reshape(-1, 4, 2, 4, 2).max(axis=(2, 4)).reshape(-1, 16).astype(np.int64)
    scores = (pooled @ WEIGHTS.T + BIAS) >> 2  # arithmetic shift, as GCC does on int32
    return scores.argmax(axis=1), scores      # argmax: first maximum on ties, as the C loop


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (N_IMAGES, 64), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    images[2] = np.arange(64) * 4 % 256
    # Random pixels rarely favour class 1: light up the 2x2 blocks where its weight is the largest.
    favour_1 = (WEIGHTS[1] > WEIGHTS[[0, 2]].max(axis=0)).reshape(4, 4)
    images[3] = (np.kron(favour_1, np.ones((2, 2), np.int64)) * 200).reshape(64)
    images[4] = np.maximum(images[3], images[4] // 8)
    classes, scores = siq_dummy_infer(images)
    assert len(set(classes.tolist())) == 3  # the vectors exercise every class
    return images, classes, scores


@pytest.fixture(scope="module")
def m4_elf(tmp_path_factory, vectors):
    images = vectors[0][:3]
    return target.build_elf(DUMMY, PREFIX, tmp_path_factory.mktemp("m4"), "cortex-m4", vectors=(images, None, None))


@pytest.mark.parametrize("cpu", sorted(target.CPUS))
def test_self_test_matches_numpy_on_every_cpu(cpu, vectors, tmp_path):
    images, classes, scores = vectors
    result = target.run_self_test(DUMMY, PREFIX, cpu, None, images, classes, scores, "-O2", work_dir=tmp_path)
    assert result["board"] == target.CPUS[cpu]["board"]
    assert result["n_images"] == N_IMAGES and result["chunks"] == 1
    assert result["mismatches"] == 0 and result["first_mismatch"] is None
    np.testing.assert_array_equal(result["classes"], classes)
    np.testing.assert_array_equal(result["scores"], scores)
    for ext in ("elf", "bin", "hex", "map"):
        assert (tmp_path / "chunk000" / f"firmware.{ext}").stat().st_size > 0


def test_wrong_expectations_are_reported_across_chunks(vectors, tmp_path):
    images, classes, scores = vectors
    classes, scores = classes.copy(), scores.copy()
    scores[21, 1] = -2**31          # also checks the INT32_MIN literal in the vectors header
    classes[33] = (classes[33] + 1) % 3
    result = target.run_self_test(DUMMY, PREFIX, "cortex-m4", "mps2-an386", images, classes, scores, "-Os",
                                  chunk=16, work_dir=tmp_path)
    assert result["chunks"] == 3 and result["chunk_size"] == 16
    assert result["mismatches"] == 2
    assert result["first_mismatch"] == {
        "index": 21,
        "expected": {"class": int(classes[21]), "scores": scores[21].tolist()},
        "got": {"class": int(classes[21]), "scores": siq_dummy_infer(images[21:22])[1][0].tolist()},
    }
    assert "INT32_MIN" in (tmp_path / "chunk001" / f"{PREFIX}_test_vectors.h").read_text()
    # The harness counts too: chunk 1 holds image 21, chunk 2 image 33, chunk 0 none.
    assert [target.run_elf(tmp_path / f"chunk{i:03d}" / "firmware.elf", "mps2-an386")[0] for i in range(3)] \
        == [0, 1, 1]


def test_chunks_follow_flash_size(vectors, tmp_path):
    """The microbit's 256 KB flash holds ~3000 dummy vectors; lm3s6965evb is the optional sixth board."""
    size = target.chunk_size(DUMMY, PREFIX, "cortex-m0", None, "-O2", tmp_path, max_chunk=10**6)
    per_vector = 64 + 1 + 4 * 3
    assert 200 * 1024 // per_vector < size < 256 * 1024 // per_vector
    images, classes, scores = vectors
    result = target.run_self_test(DUMMY, PREFIX, "cortex-m3", "lm3s6965evb", images[:5], classes[:5],
                                  scores[:5], chunk=2, work_dir=tmp_path)
    assert (result["chunks"], result["mismatches"]) == (3, 0)


def test_unchecked_firmware_prints_results(m4_elf, vectors):
    status, text = target.run_elf(m4_elf, "mps2-an386")
    classes, scores = siq_dummy_infer(vectors[0][:3])
    expected = [f"{i} {classes[i]} " + " ".join(map(str, scores[i])) for i in range(3)] + ["unchecked 3"]
    assert (status, text.splitlines()) == (0, expected)


def test_instruction_counts_are_exact_and_repeatable(m4_elf, vectors, tmp_path):
    first = target.count_instructions(m4_elf, "mps2-an386")
    second = target.count_instructions(m4_elf, "mps2-an386")
    assert first == second and len(first) == 2 and first[1] > first[0] > 0
    result = target.instructions_per_inference(DUMMY, PREFIX, "cortex-m4", None, vectors[0][0], "-O2",
                                               work_dir=tmp_path)
    assert result["total"] == first[1] - first[0]  # same image 0, same build flags
    assert len(result["per_op"]) == 3 and min(result["per_op"]) > 0 and result["epilogue"] > 0
    assert result["total"] < sum(result["per_op"]) + result["epilogue"] == result["profile_total"]
    # Dense 16x3 multiply-adds cost more than the 3 shifts.
    assert result["per_op"][1] > result["per_op"][2]


def test_footprint_counts_the_model_only(m4_elf):
    fp = target.footprint(m4_elf, PREFIX)
    assert fp["weights_bytes"] == 16 * 3 + 4 * 3   # int8 weights + int32 bias; class names unused -> dropped
    assert fp["bss_bytes"] == 32 and fp["data_bytes"] == 0      # the arena
    assert 0 < fp["code_bytes"] < fp["sections"][".text"]      # startup and harness excluded
    assert 0 < fp["stack_bytes"] < 256 and fp["stack_bounded"]
    assert fp["ram_bytes"] == 32 + fp["stack_bytes"]
    assert fp["model_flash_bytes"] == fp["code_bytes"] + fp["weights_bytes"]
    assert fp["flash_total_bytes"] > fp["model_flash_bytes"]
    assert {s["name"] for s in fp["model_symbols"]} >= {"siq_dummy_infer", "siq_dummy_weights"}


def test_cortex_m0_division_comes_from_libgcc(tmp_path):
    elf = target.build_elf(DUMMY, PREFIX, tmp_path, "cortex-m0")
    fp = target.footprint(elf, PREFIX)
    assert fp["libgcc_bytes"] > 0          # the harness's decimal printing divides; the M0 has no divider
    assert fp["sections"][".isr_vector"] == 64
    assert target.run_elf(elf, "microbit")[1].splitlines()[-1] == "unchecked 1"


@pytest.mark.parametrize("cpu, board, message", [
    ("cortex-m33", None, "unknown cpu 'cortex-m33'"),
    ("cortex-m4", "stm32", "unknown board 'stm32'"),
    ("cortex-m4", "microbit", "board 'microbit' has a cortex-m0, not a cortex-m4"),
    ("cortex-m0", "lm3s6965evb", "board 'lm3s6965evb' has a cortex-m3"),
])
def test_bad_targets_are_rejected(cpu, board, message, tmp_path):
    with pytest.raises(SiqError, match=message):
        target.build_elf(DUMMY, PREFIX, tmp_path, cpu, board)


def _broken_model(tmp_path: Path, old: str, new: str) -> Path:
    model = tmp_path / "model"
    shutil.copytree(DUMMY, model)
    for name in (f"{PREFIX}.h", f"{PREFIX}.c"):
        path = model / name
        path.write_text(path.read_text().replace(old, new))
    return model


def test_compiler_error_names_the_first_error(tmp_path):
    model = _broken_model(tmp_path, "int best = 0;", "int best = 0, unused = 1;")
    with pytest.raises(SiqError, match=r"siq_dummy\.c.*unused variable 'unused'.*full log"):
        target.build_elf(model, PREFIX, tmp_path / "build", "cortex-m4")


def test_an_arena_beyond_the_ram_is_refused_in_one_line(tmp_path):
    model = _broken_model(tmp_path, "SIQ_DUMMY_ARENA_BYTES 32", "SIQ_DUMMY_ARENA_BYTES 16384")
    with pytest.raises(SiqError, match=r"^the model needs 18,432 B of RAM \(16,384 B activation arena \+ 2,048 B "
                                       r"stack\); board .* \(cortex-m0\) has 16,384 B$"):
        target.build_elf(model, PREFIX, tmp_path / "build", "cortex-m0")


def test_ram_overflow_past_the_arena_check_is_a_link_error(tmp_path):
    """An arena that leaves room for the stack but not for the harness's buffers: the linker's check remains."""
    model = _broken_model(tmp_path, "SIQ_DUMMY_ARENA_BYTES 32", "SIQ_DUMMY_ARENA_BYTES 14330")
    with pytest.raises(SiqError, match="RAM' overflowed"):
        target.build_elf(model, PREFIX, tmp_path / "build", "cortex-m0")


@pytest.mark.parametrize("cpu", ["cortex-m0", "cortex-m4"])
def test_fault_exits_99_and_is_reported(cpu, vectors, tmp_path):
    model = _broken_model(tmp_path, "    int best = 0;\n", "    int best = 0;\n    __asm__ __volatile__(\"udf #0\");\n")
    elf = target.build_elf(model, PREFIX, tmp_path / "build", cpu)
    status, text = target.run_elf(elf, target.CPUS[cpu]["board"], timeout=20)
    assert (status, text) == (99, "siq: HardFault\n")
    images, classes, scores = vectors
    with pytest.raises(SiqError, match="faulted"):
        target.run_self_test(model, PREFIX, cpu, None, images[:2], classes[:2], scores[:2], chunk=2,
                             work_dir=tmp_path / "self_test")


def test_vectors_must_match_the_model(vectors, tmp_path):
    images, classes, scores = vectors
    with pytest.raises(SiqError, match="test images have 63 bytes, the model expects 64"):
        target.build_elf(DUMMY, PREFIX, tmp_path, "cortex-m4", vectors=(images[:, :63], None, None))
    with pytest.raises(SiqError, match="expected classes must lie in 0..2"):
        write_test_vectors(tmp_path, PREFIX, images, classes + 3, scores)
    with pytest.raises(SiqError, match="not a C identifier"):
        target.build_elf(DUMMY, "siq-dummy", tmp_path, "cortex-m4")


def test_pipeline_step_reports_and_keeps_the_firmware(vectors, tmp_path, monkeypatch):
    """run_target_step takes its expected scores from the integer reference (integer_scores): the numpy twin here."""
    monkeypatch.setattr(target_step, "integer_scores", lambda model, images: siq_dummy_infer(images)[1])
    model = tmp_path / "model"
    shutil.copytree(DUMMY, model)
    lines = []
    # the dummy model's three kernel calls, as a lowered model lists them
    ops = [SimpleNamespace(kernel=f"kernel{k}", fast_kernel=None, macs=10 * k) for k in range(3)]
    result = target.run_target_step(model, PREFIX, SimpleNamespace(integer=None, ops=ops),
                                    SimpleNamespace(test_x=vectors[0].reshape(-1, 1, 8, 8)), "cortex-m0",
                                    n_images=10, log=lines.append)
    assert (result["board"], result["n_images"], result["mismatches"]) == ("microbit", 10, 0)
    assert result["instructions"]["total"] > 0 and len(result["instructions"]["per_op"]) == 3
    assert [(op["kernel"], op["macs"]) for op in result["ops"]] == [("kernel0", 0), ("kernel1", 10), ("kernel2", 20)]
    assert [op["instructions"] for op in result["ops"]] == result["instructions"]["per_op"]
    assert result["footprint"]["weights_bytes"] == 60
    assert (model / "target-microbit" / "firmware.hex").stat().st_size > 0
    assert "10 test images, 0 mismatches" in lines[0]


def test_missing_toolchain_says_how_to_install(monkeypatch):
    assert target.toolchain_status()["ok"], "install the toolchain: make setup"
    monkeypatch.setenv("PATH", "/nonexistent")
    status = target.toolchain_status()
    assert not status["ok"] and {"arm-none-eabi-gcc", "qemu-system-arm"} <= set(status["missing"])
    with pytest.raises(SiqError, match="arm-none-eabi-gcc.*qemu-system-arm.*apt-get install --no-install-recommends"):
        target.require_toolchain()
