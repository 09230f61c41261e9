"""Cache keys: the versioned schema gives the committed results' keys and ignores fields at their neutral values."""
from __future__ import annotations

import pytest

from siq.training.experiments import cache, grid, sweep
from siq.training.quant import CALIBRATION_RULES
from siq.training.quantizers import SIQConfig, SIQPlusConfig
from siq.training.train import TrainConfig


def test_model_key_ignores_recipe_fields_left_at_their_neutral_values():
    """Models cached before the recipe fields existed keep their keys; a recipe change gets a new model."""
    arch = sweep.load_arch("paper-mnist")
    plain = cache.model_key("d", arch, TrainConfig())
    assert plain == cache.model_key("d", arch, TrainConfig(augment_flip=False, dropout=None, label_smoothing=0.0))
    for change in ({"augment_flip": True}, {"dropout": 0.3}, {"label_smoothing": 0.1}, {"epochs": 16}, {"seed": 1}):
        assert cache.model_key("d", arch, TrainConfig(**change)) != plain


# Keys computed by the code that wrote the committed results (before the cache schema moved into
# training/experiments/cache.py): the schema must keep giving exactly these.
OLD_MODEL_KEYS = {"plain": "624e3c54ad9f1097b30a3892", "recipe": "1ea21cfa948468462c646dd1"}
OLD_CELL_KEYS = [
    (grid.Cell("float", None, 4, 0), {}, "f6a85daa3761e2c9ce938a0f"),
    (grid.Cell("float", None, None, 0), {}, "31008eaf4f94b81febc24749"),
    (grid.Cell("siq", 2, 2, 1), {}, "2ca71dcc5b551a43985de8e4"),
    (grid.Cell("kmeans", 4, 4, 0), {"codebook_bits": 12, "per_channel": "conv"}, "878a687cdd5ba19e1dcf181d"),
    (grid.Cell("siq+", 2, 2, 3), {"codebook_bits": 12, "per_channel": "conv",
                                  "siq": SIQConfig(rounds=6, epochs_per_round=4, lr=1e-3, growth=1.0, alpha=0.03,
                                                   dropout=0.2),
                                  "plus": SIQPlusConfig(real_steps=True, temperature=2.0)}, "980198edb0cdd15fe5798dd9"),
    (grid.Cell("siq+-progressive", 1, 4, 0), {"calibration": "sequential", "input_bits": 8},
     "43460d55998c757e7afc0825"),
]


def _template(codebook_bits=8, siq=None, plus=None, calibration="float", **kw):
    """The sweep's quantize template; calibration by each tensor's squared error, the rule the keys were
    written with (the neutral value a key leaves out)."""
    return sweep.quantize_template(codebook_bits, 2000, siq or SIQConfig(), plus or SIQPlusConfig(),
                                   calibration=calibration, **kw)


def test_cache_keys_equal_the_keys_the_committed_results_were_written_with():
    arch = sweep.load_arch("paper-mnist")
    assert cache.model_key("d", arch, TrainConfig()) == OLD_MODEL_KEYS["plain"]
    recipe = TrainConfig(epochs=40, lr=3e-3, augment_shift=1, augment_flip=True, dropout=0.2)
    assert cache.model_key("d", arch, recipe) == OLD_MODEL_KEYS["recipe"]
    for cell, options, key in OLD_CELL_KEYS:
        assert cache.cell_key("m", cell, 8, _template(**options)) == key, cell


def test_cell_key_ignores_fields_left_at_their_neutral_values():
    """Cells cached before SIQ retraining could be augmented or take its own dropout rate, shifts be calibrated
    sequentially, codebooks kept per channel or the input widened keep their keys (a key written out by hand from
    the schema without those fields); each of those, turned on, makes new cells."""
    cell = sweep.Cell("siq+", 2, 2, 0)
    plain = cache.cell_key("m", cell, 8, _template())
    t = _template()
    by_hand = {"method": "siq+", "weight_bits": 2, "act_bits": 2, "fc_bits": 8, "version": 2, "quantize": {
        **{k: t[k] for k in ("codebook_bits", "calibration_images", "batch_size")},
        "siq": {k: v for k, v in t["siq"].items() if k not in ("augment_shift", "augment_flip", "dropout")},
        "plus": {k: v for k, v in t["plus"].items() if k not in ("real_steps", "progressive_acts")}}}
    assert plain == cache.digest("cell", 1, "m", by_hand)[:24]
    siq_changes = [SIQConfig(augment_shift=1), SIQConfig(augment_flip=True), SIQConfig(dropout=0.2)]
    assert len({plain} | {cache.cell_key("m", cell, 8, _template(siq=c)) for c in siq_changes}) == 4
    plus_changes = [SIQPlusConfig(real_steps=True), SIQPlusConfig(progressive_acts=2)]
    assert len({plain} | {cache.cell_key("m", cell, 8, _template(plus=c)) for c in plus_changes}) == 3
    float_cell = sweep.Cell("float", None, 2, 0)
    assert cache.cell_key("m", float_cell, 8, _template()) == cache.digest(
        "cell", 1, "m", {"method": "float", "act_bits": 2, "calibration_images": 2000})[:24]
    # the activation-shift rule, for quantized and float-weight cells
    for c in (cell, float_cell):
        keys = {rule: cache.cell_key("m", c, 8, _template(calibration=rule)) for rule in CALIBRATION_RULES}
        assert len(set(keys.values())) == len(CALIBRATION_RULES) == 3
    # per-channel codebooks: new keys for quantized cells; float-weight cells have no codebooks to differ
    for c, differs in ((cell, True), (float_cell, False)):
        keys = {choice: cache.cell_key("m", c, 8, _template(per_channel=choice)) for choice in ("none", "conv", "all")}
        assert len(set(keys.values())) == (3 if differs else 1)
    # a wider input: new keys for quantized cells and float-weight cells with quantized activations, not for
    # float activations (no input quantization to differ)
    for c, differs in ((cell, True), (float_cell, True), (sweep.Cell("float", None, None, 0), False)):
        keys = {b: cache.cell_key("m", c, 8, _template(input_bits=b)) for b in (None, 8, 4)}
        assert len(set(keys.values())) == (3 if differs else 1)
    # steps per channel: new keys wherever feature maps are quantized (a float-weight cell's also hashes the
    # codebook width, which bounds the octaves), none for float feature maps
    for c, differs in ((cell, True), (float_cell, True), (sweep.Cell("siq", 2, None, 0), False)):
        keys = {choice: cache.cell_key("m", c, 8, _template(channel_steps=choice)) for choice in ("none", "depthwise")}
        assert len(set(keys.values())) == (2 if differs else 1)
        assert keys["none"] == cache.cell_key("m", c, 8, _template())


def test_cell_key_refuses_a_config_that_lost_a_schema_field():
    template = _template()
    del template["siq"]["alpha"]
    with pytest.raises(KeyError):
        cache.cell_key("m", sweep.Cell("siq", 2, 2, 0), 8, template)


def test_cells_of_networks_with_average_pools_get_new_keys_where_feature_maps_are_quantized():
    """Average pools round their means onto steps of their own: those cells name it; a network without an
    average pool, or a cell with float feature maps, keeps its key."""
    quantized, float_maps = sweep.Cell("siq", 4, 4, 0), sweep.Cell("siq", 4, None, 0)
    for cell in (quantized, sweep.Cell("float", None, 4, 0)):
        plain = cache.cell_key("m", cell, 8, _template())
        pooled = cache.cell_key("m", cell, 8, _template(), average_pools=True)
        assert pooled != plain
        assert pooled == cache.digest("cell", 1, "m", *_what(cell), {"pool_steps": "own"})[:24]
    assert cache.cell_key("m", float_maps, 8, _template(), average_pools=True) == \
        cache.cell_key("m", float_maps, 8, _template())


def _what(cell):
    """A cell's `what` part, written out by hand from the schema (the template's neutral fields left out)."""
    t = _template()
    if cell.weight_bits is None:
        return ({"method": "float", "act_bits": cell.act_bits, "calibration_images": t["calibration_images"]},)
    quantize = {**{k: t[k] for k in ("codebook_bits", "calibration_images", "batch_size")},
                "siq": {k: v for k, v in t["siq"].items() if k not in ("augment_shift", "augment_flip", "dropout")}}
    return ({"method": "siq", "weight_bits": cell.weight_bits, "act_bits": cell.act_bits, "fc_bits": 8,
             "version": 2, "quantize": quantize},)
