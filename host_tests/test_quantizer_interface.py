"""The typed quantizer interface: what every method gets (QuantizerInput) and hands back (QuantizerOutput), the
registry of methods and siq+ variants, and the one retraining loop that siq and siq+ share."""
import copy
from dataclasses import replace

import numpy as np
import pytest

from siq.training.errors import SiqError
from siq.training.quant import snap_codebook
from siq.training.quantizers import (METHODS, RETRAINING_METHODS, FloatCodebook, QuantizeConfig, QuantizerInput,
                                     QuantizerOutput, SIQConfig, SIQPlusConfig, prepare, quantize_model, register,
                                     resolve_method, run)

QUICK = SIQConfig(rounds=2, epochs_per_round=1)


def _config(method, **kw):
    return QuantizeConfig(method=method, conv_bits=2, fc_bits=3, act_bits=3, siq=QUICK, **kw)


@pytest.mark.parametrize("method", ["uniform", "kmeans", "siq", "siq+"])
def test_every_method_hands_back_a_codebook_per_layer_and_never_writes_into_its_input(method, tiny_nets, digits):
    net = tiny_nets[True]
    job = prepare(net, digits.train_x, digits.train_y, _config(method, plus=SIQPlusConfig(step_lr=0.2)))
    assert isinstance(job, QuantizerInput) and job.net is not net
    calibrated, bits = dict(job.shifts), dict(job.bits)
    out = METHODS[method].run(job)
    assert isinstance(out, QuantizerOutput)
    assert job.shifts == calibrated and job.bits == bits  # the input is read, never written back into
    assert sorted(out.books) == net.arch.weighted_layers() == sorted(job.bits)
    for i, book in out.books.items():
        assert isinstance(book, FloatCodebook)
        weights = job.net.layers[i].weight
        assert book.assignment.dtype == np.int64 and book.assignment.size == weights.numel()
        assert np.all(np.diff(book.centroids) > 0) and len(book.centroids) <= 2 ** job.bits[i]
        assert 0 <= book.assignment.min() and book.assignment.max() < len(book.centroids)
    assert sorted(out.shifts) == sorted(calibrated)
    if method == "siq+":  # learned steps: the trained shifts come back in the output, recorded per round
        assert out.shifts != calibrated
        assert out.shifts == {int(p): s for p, s in out.history[-1]["shifts"].items()}
    else:
        assert out.shifts == calibrated
    assert (len(out.history) > 0) == (method in RETRAINING_METHODS)


@pytest.mark.parametrize("method", ["kmeans", "siq"])
def test_quantize_model_is_the_method_output_snapped_onto_the_grid(method, tiny_nets, digits):
    """quantize_model adds nothing but the fixed-point snap, the biases and the record: the same seed through
    the interface by hand gives the same codebooks, shifts and history."""
    cfg = _config(method)
    qm, retrained = quantize_model(tiny_nets[True], digits.train_x, digits.train_y, cfg, digits.class_names)
    job = prepare(tiny_nets[True], digits.train_x, digits.train_y, cfg)
    out = run(job)
    assert out.seconds > 0
    for i, (centroids, assignment) in out.books.items():
        expected = snap_codebook(centroids, assignment.reshape(job.net.layers[i].weight.shape), job.bits[i], 8)
        assert np.array_equal(qm.layers[i].codebook, expected.codebook)
        assert np.array_equal(qm.layers[i].indices, expected.indices)
    assert qm.shifts == out.shifts and qm.meta["history"] == out.history
    for a, b in zip(retrained.parameters(), job.net.parameters()):
        assert np.array_equal(a.detach().numpy(), b.detach().numpy())


def test_real_steps_report_the_scales_they_folded(tiny_nets, digits):
    job = prepare(tiny_nets[True], digits.train_x, digits.train_y,
                  _config("siq+", plus=SIQPlusConfig(real_steps=True, step_lr=0.2)))
    out = METHODS["siq+"].run(job)
    assert out.step_scales[-1] == 1.0 and sorted(out.step_scales) == sorted(out.shifts)
    assert all(2 ** -0.5 - 1e-12 <= c <= 2 ** 0.5 + 1e-12 for c in out.step_scales.values())
    assert any(c != 1.0 for c in out.step_scales.values())
    plain = METHODS["siq+"].run(prepare(tiny_nets[True], digits.train_x, digits.train_y, _config("siq+")))
    assert plain.step_scales == {}


def test_registry_names_methods_and_resolves_siq_plus_variants():
    assert set(RETRAINING_METHODS) == {"siq", "siq+"} and set(RETRAINING_METHODS) < set(METHODS)
    variant = resolve_method("siq+-distill-steps")
    assert variant.name == "siq+-distill-steps" and variant.run is METHODS["siq+"].run and variant.retrains
    cfg = QuantizeConfig(method="siq+-distill-steps")
    assert variant.configure(cfg).plus == SIQPlusConfig().without(["distill", "steps"])
    assert resolve_method("siq") is METHODS["siq"] and METHODS["siq"].configure(cfg) is cfg
    for bad, message in (("nope", "unknown quantization method"), ("siq-distill", "only siq\\+"),
                         ("siq+-nonsense", "unknown siq\\+ ingredient"), (None, "unknown quantization method")):
        with pytest.raises(SiqError, match=message):
            resolve_method(bad)


def test_a_variant_name_quantizes_as_siq_plus_with_those_ingredients_off(tiny_nets, digits):
    one = SIQConfig(rounds=1, epochs_per_round=1)
    by_name, _ = quantize_model(tiny_nets[False], digits.train_x, digits.train_y,
                                replace(_config("siq+-steps-distill"), siq=one), digits.class_names)
    by_config, _ = quantize_model(tiny_nets[False], digits.train_x, digits.train_y,
                                  replace(_config("siq+"), siq=one, plus=SIQPlusConfig().without(["steps", "distill"])),
                                  digits.class_names)
    assert by_name.meta["method"] == "siq+-steps-distill"
    assert by_name.meta["config"]["plus"] == by_config.meta["config"]["plus"]
    assert by_name.shifts == by_config.shifts
    for i in by_name.layers:
        assert np.array_equal(by_name.layers[i].codebook, by_config.layers[i].codebook)
        assert np.array_equal(by_name.layers[i].indices, by_config.layers[i].indices)


def test_a_registered_method_plugs_in_and_a_missing_layer_is_refused(tiny_nets, digits, monkeypatch):
    monkeypatch.setattr("siq.training.quantizers.interface.METHODS", dict(METHODS))
    from siq.training.quantizers import interface

    @register("firstonly")
    def first_layer_only(job: QuantizerInput) -> QuantizerOutput:
        i = job.net.arch.weighted_layers()[0]
        return QuantizerOutput({i: FloatCodebook(np.array([0.0]), np.zeros(job.net.layers[i].weight.numel(),
                                                                          np.int64))}, dict(job.shifts))
    assert "firstonly" in interface.METHODS and "firstonly" not in METHODS
    with pytest.raises(SiqError, match="separates"):
        register("first-only")
    with pytest.raises(SiqError, match="without a codebook"):
        quantize_model(copy.deepcopy(tiny_nets[True]), digits.train_x, digits.train_y,
                       _config("firstonly"), digits.class_names)
