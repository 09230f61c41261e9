"""Per-point activation widths (`--point-bits`): each stored feature map may have its own code width 1-8 beside
--act-bits. Every op reads and writes each buffer at its own point's width (max codes, zero points of signed
points, LRN tables over the input's codes, add and concat on mixed widths) in the fake-quant model, the numpy
reference and every C build; a point at <= 4 bits is stored packed, wider ones as bytes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_arch
from operator_cases import check_four_ways, random_images
from siq.codegen.cli import main
from siq.codegen.fit.configfile import read_config, write_config
from siq.codegen.lower import lower
from siq.codegen.target import run_self_test
from siq.training.arch import Arch
from siq.training.errors import SiqError
from siq.training.integer import build_integer_model, integer_scores
from siq.training.quant import load_quantized, quantization_points, save_quantized
from siq.training.quantizers import QuantizeConfig, check_point_widths
from test_graph import TINY

WIDTHS = (2, 8, 5, 1, 3, 6, 4, 7)


def mixed(arch: Arch, offset: int = 0) -> dict[int, int]:
    """A different width at neighbouring points (so every op sees mixed in/out widths)."""
    return {p: WIDTHS[(k + offset) % len(WIDTHS)] for k, p in enumerate(quantization_points(arch.folded()))}


@pytest.mark.parametrize("offset", [0, 3])
def test_lrn_network_with_mixed_widths_is_bit_exact(offset, tmp_path):
    arch = tiny_arch(lrn=True)
    widths = mixed(arch, offset)
    qm, lm = check_four_ways(arch, offset, tmp_path, builds=("default", "reference", "dsp"), point_widths=widths)
    assert qm.point_widths == widths
    # every requantizing op clamps to its own point's range
    clamps = {op.ir.layer_index: op.params.max_code for op in lm.ops if getattr(op.ir, "layer_index", None) in widths
              and hasattr(op.params, "max_code")}
    assert clamps and all(code <= 2 ** widths[p] - 1 for p, code in clamps.items())
    assert any(code == 2 ** widths[p] - 1 for p, code in clamps.items())


def test_branching_network_with_mixed_widths_is_bit_exact_on_the_target(tmp_path):
    arch = Arch.from_dict(TINY)
    widths = mixed(arch)
    qm, lm = check_four_ways(arch, 0, tmp_path, builds=("default", "reference", "dsp"), point_widths=widths)
    images = random_images(qm.arch, np.random.default_rng(0))
    scores = integer_scores(lm.integer, images)
    result = run_self_test(tmp_path, lm.prefix, "cortex-m4", None, images, np.argmax(scores, axis=1), scores, "-O2")
    assert result["mismatches"] == 0 and np.array_equal(result["scores"], scores), result["first_mismatch"]


def test_a_width_changes_only_its_point_and_its_storage(tmp_path):
    """One point at 8 bits: its buffer is stored as bytes (more RAM), the model computes other scores; the other
    points keep --act-bits."""
    arch = tiny_arch(lrn=False)
    base, _ = check_four_ways(arch, 1, tmp_path / "a")
    point = quantization_points(arch)[0]
    wide, lm = check_four_ways(arch, 1, tmp_path / "b", point_widths={point: 8})
    assert lower(base).arena_bytes < lm.arena_bytes
    assert {q: wide.bits_at(q) for q in quantization_points(arch)} == \
        {q: 8 if q == point else 4 for q in quantization_points(arch)}
    images = random_images(arch, np.random.default_rng(1))
    assert np.any(integer_scores(build_integer_model(base), images) != integer_scores(lm.integer, images))


def test_model_file_keeps_point_widths_and_refuses_corrupt_ones(tmp_path):
    arch = tiny_arch(lrn=True)
    qm, _ = check_four_ways(arch, 2, tmp_path, builds=(), point_widths=mixed(arch))
    save_quantized(tmp_path / "q.pt", qm)
    loaded = load_quantized(tmp_path / "q.pt")
    assert loaded.point_widths == qm.point_widths
    images = random_images(arch, np.random.default_rng(2))
    assert np.array_equal(integer_scores(build_integer_model(loaded), images),
                          integer_scores(build_integer_model(qm), images))
    for bad, message in [({0: 4}, r"activation widths for \[0\], which are not feature-map points"),
                         ({quantization_points(arch)[0]: 9}, "activation bits of point")]:
        qm.point_widths = bad
        save_quantized(tmp_path / "bad.pt", qm)
        with pytest.raises(SiqError, match=message):
            load_quantized(tmp_path / "bad.pt")


def test_points_that_are_not_stored_are_refused_naming_the_points():
    arch = tiny_arch(lrn=True)
    points = quantization_points(arch)
    with pytest.raises(SiqError, match=rf"--point-bits: 0 of architecture '{arch.name}' is not a quantization point; the "
                                       rf"points are {', '.join(map(str, points))}"):
        check_point_widths(arch, {0: 4})
    with pytest.raises(SiqError, match="activation bits of point"):
        check_point_widths(arch, {points[0]: 0})


def test_configuration_file_round_trips_point_widths(tmp_path):
    cfg = QuantizeConfig(method="kmeans", point_widths={1: 8, 5: 2})
    write_config(cfg, tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())["point_widths"] == {"1": 8, "5": 2}
    assert read_config(tmp_path / "c.json").point_widths == {1: 8, 5: 2}
    (tmp_path / "bad.json").write_text('{"point_widths": {"1": 12}}')
    with pytest.raises(SiqError, match="point_widths of layer 1 must be a whole number from 1 to 8"):
        read_config(tmp_path / "bad.json")


@pytest.mark.parametrize("value, message", [
    ("2=9", "--point-bits"), ("x=4", "--point-bits wants INDEX=BITS"),
    ("4=4", "--point-bits: 4 of architecture 'paper-mnist' is not a quantization point; the points are 1, 3, 5, 7, 10")])
def test_cli_refuses_bad_point_bits_before_training(value, message, tmp_path, capsys):
    code = main(["pipeline", "--dataset", "digits", "--epochs", "1", "--point-bits", value, "--out",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_siq_sweep_takes_point_bits_as_its_study_option(tmp_path, capsys):
    """`siq sweep --point-bits` is the study option point_bits (left out, so the cache keys stay, unless given),
    and a point that is not one is refused before anything trains."""
    from siq.codegen.cli import build_parser
    from siq.codegen.experiments import sweep_run_options
    parser = build_parser()
    assert "point_bits" not in sweep_run_options(parser.parse_args(["sweep"]))
    options = sweep_run_options(parser.parse_args(["sweep", "--point-bits", "1=8,5=2"]))
    assert options["point_bits"] == {"1": 8, "5": 2}
    code = main(["sweep", "--dataset", "digits", "--epochs", "1", "--point-bits", "4=4",
                 "--out", str(tmp_path / "s.jsonl"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "4 of architecture 'paper-mnist' is not a quantization point" in err[0]
    assert not (tmp_path / "s.jsonl").exists() and not (tmp_path / "cache").exists()
