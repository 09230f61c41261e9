"""Cache keys of float models and sweep cells, owned here with an explicit, versioned schema.

A key is a hash of exactly the fields listed below, not of whatever the training and quantizer config dataclasses
hold today: a renamed or added config field must not silently change the key of every committed result. A field
the schema names but a config lacks fails loudly (KeyError) instead.

Schema 1 (the keys of every committed result in docs/results, and of every .siq_cache written so far):
    model key = sha256("model", 1, data digest, arch.to_dict(), TRAIN_FIELDS)[:24]
    cell key  = sha256("cell", 1, model key, what)[:24], where `what` is, for a float-weight cell, its activation
                bits, calibration images, calibration rule and input bits (the last only with quantized activations);
                for a quantized cell, method, widths, fc bits and the QUANTIZE_FIELDS the method uses (SIQ_FIELDS
                for the retraining methods, PLUS_FIELDS for siq+), plus the method's algorithm version where it is
                not 1.
A network with an average pool, scored with quantized feature maps, hashes in {"pool_steps": "own"}: its pools
now round their means onto steps of their own, not back onto their inputs' (graph.py), so the same settings give
another integer model; every other cell keeps its key.
A training device other than the CPU (GPU float roundings give other weights) is hashed in as a last part
{"device": type}; CPU keys leave it out, so they are the keys of every committed result.
Fields that were added to the configs after results had been cached are left out of a key while they hold their
neutral value (the *_NEUTRAL tables): at that value the config means what it meant before the field existed, so
those cells keep their keys. A field that changes meaning needs a new schema version, not a new neutral entry.
Cache files hold plain JSON; read_cached_cell() returns None for anything unreadable so that the cell is recomputed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from siq.training.arch import Arch
from siq.training.quant import DEFAULT_CALIBRATION
from siq.training.quantizers import (DEFAULT_PER_CHANNEL, RETRAINING_METHODS, QuantizeConfig, SIQConfig, SIQPlusConfig,
                                     method_variant)

from .grid import FLOAT_METHOD, Cell

SCHEMA = 1  # hashed into every key: bump it (and say why in docs/decisions.md) to start a fresh cache
# Bumped when a method's algorithm changes, so that its cached cells are recomputed (others keep theirs).
# siq 2: the result is the codebook of the last retraining, not a re-clustering after it.
METHOD_VERSIONS = {"siq": 2, "siq+": 2}

TRAIN_FIELDS = ("epochs", "batch_size", "lr", "weight_decay", "lr_schedule", "augment_shift", "augment_flip",
                "dropout", "label_smoothing", "seed")
TRAIN_NEUTRAL = {"augment_flip": False, "dropout": None, "label_smoothing": 0.0}
QUANTIZE_FIELDS = ("input_bits", "codebook_bits", "calibration_images", "calibration", "per_channel", "equalize",
                   "point_widths", "channel_steps", "batch_size", "siq", "plus")
# per_channel: "depthwise" became the default after "none"; they quantize every network without depthwise convs
# alike, and the default keeps the keys it had (see docs/decisions.md for the cached cells of depthwise networks).
QUANTIZE_NEUTRAL = {"calibration": "float", "per_channel": "depthwise", "input_bits": None, "equalize": False,
                    "point_widths": {}, "channel_steps": "none"}
SIQ_FIELDS = ("rounds", "epochs_per_round", "lr", "alpha", "growth", "tolerance", "quantize_fc", "augment_shift",
              "augment_flip", "dropout")
SIQ_NEUTRAL = {"augment_shift": 0, "augment_flip": False, "dropout": None}
PLUS_FIELDS = ("quantize_fc", "finetune_centroids", "distill", "temperature", "progressive", "learn_act_steps",
               "step_lr", "real_steps", "progressive_acts")
PLUS_NEUTRAL = {"real_steps": False, "progressive_acts": 0}


def digest(*parts) -> str:
    """sha256 over JSON parts (sorted keys) and arrays (dtype, shape and bytes), each followed by a NUL."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"{part.dtype}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def _pick(fields: dict, names: tuple[str, ...], neutral: dict) -> dict:
    """The schema's fields of a config (KeyError when the config lost one), neutral ones left out."""
    picked = {name: fields[name] for name in names}
    return {k: v for k, v in picked.items() if k not in neutral or v != neutral[k]}


def _device_part(device: str) -> tuple:
    """The key part naming the training device type: none for the CPU."""
    return () if device == "cpu" else ({"device": device},)


def model_key(data_digest: str, arch: Arch, train_cfg, device: str = "cpu") -> str:
    """Key of a float model: the data, the architecture, the training config (a TrainConfig or its dict) and
    the device type it trains on ("cpu", "cuda")."""
    fields = train_cfg if isinstance(train_cfg, dict) else asdict(train_cfg)
    return digest("model", SCHEMA, data_digest, arch.to_dict(), _pick(fields, TRAIN_FIELDS, TRAIN_NEUTRAL),
                  *_device_part(device))[:24]


def cell_quantize_fields(qcfg: dict, method: str) -> dict:
    """The sweep's quantize template as this cell's method uses it (a siq+ variant turns ingredients off)."""
    base, off = method_variant(method)
    if not off:
        return qcfg
    return {**qcfg, "plus": asdict(SIQPlusConfig(**qcfg["plus"]).without(off))}


def cell_key(model: str, cell: Cell, fc_bits: int, qcfg: dict, device: str = "cpu",
             average_pools: bool = False) -> str:
    """Key of one cell of a sweep on the float model `model`. qcfg: the sweep's quantize template (every
    QuantizeConfig field but the cell's own, siq and plus as dicts; see quantize_template). device: the
    device type retraining runs on (a float-weight cell does not retrain: only its model key names the device).
    average_pools: the architecture has an average pool (see the module docstring)."""
    pools = ({"pool_steps": "own"},) if average_pools and cell.act_bits is not None else ()
    if cell.weight_bits is None:
        what = {"method": FLOAT_METHOD, "act_bits": cell.act_bits,
                "calibration_images": qcfg["calibration_images"]}
        if qcfg["calibration"] != QUANTIZE_NEUTRAL["calibration"]:
            what["calibration"] = qcfg["calibration"]
        if qcfg["input_bits"] != QUANTIZE_NEUTRAL["input_bits"] and cell.act_bits is not None:
            what["input_bits"] = qcfg["input_bits"]
        if qcfg.get("point_widths") and cell.act_bits is not None:
            what["point_widths"] = qcfg["point_widths"]
        if qcfg.get("channel_steps", "none") != "none" and cell.act_bits is not None:
            # the codebook's width bounds the octaves between channel steps (quant.channel_octave_limit)
            what.update(channel_steps=qcfg["channel_steps"], codebook_bits=qcfg["codebook_bits"])
        return digest("cell", SCHEMA, model, what, *pools)[:24]
    base, _ = method_variant(cell.method)
    fields = cell_quantize_fields(qcfg, cell.method)
    quantize = _pick(fields, QUANTIZE_FIELDS, QUANTIZE_NEUTRAL)
    if cell.act_bits is None:  # float feature maps: the widths and steps of points play no part
        quantize.pop("point_widths", None)
        quantize.pop("channel_steps", None)
    # SIQ settings count only for the methods that use them (siq, siq+), siq+'s own only for siq+ (and its
    # variants, with their ingredients turned off)
    if base in RETRAINING_METHODS:
        quantize["siq"] = _pick(fields["siq"], SIQ_FIELDS, SIQ_NEUTRAL)
    else:
        del quantize["siq"]
    if base == "siq+":
        quantize["plus"] = _pick(fields["plus"], PLUS_FIELDS, PLUS_NEUTRAL)
    else:
        del quantize["plus"]
    what = {"method": cell.method, "weight_bits": cell.weight_bits, "act_bits": cell.act_bits, "fc_bits": fc_bits,
            "quantize": quantize}
    if METHOD_VERSIONS.get(base, 1) != 1:
        what["version"] = METHOD_VERSIONS[base]
    return digest("cell", SCHEMA, model, what, *_device_part(device), *pools)[:24]


def read_cached_cell(path: Path) -> dict | None:
    """A cache file's record, or None when it is missing or unreadable (then it is recomputed)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and "accuracy" in record else None


# QuantizeConfig fields that a cell sets itself; every other field comes from the sweep's template.
_CELL_FIELDS = ("method", "conv_bits", "fc_bits", "layer_bits", "act_bits", "seed")


def quantize_template(codebook_bits: int, calibration_images: int, siq_cfg: SIQConfig,
                      plus_cfg: SIQPlusConfig, calibration: str = DEFAULT_CALIBRATION,
                      per_channel: str = DEFAULT_PER_CHANNEL, input_bits: int | None = None, equalize: bool = False,
                      point_widths: dict | None = None, channel_steps: str = "none") -> dict:
    """Every QuantizeConfig field but the cell's own (siq and plus as dicts): what each cell of a sweep shares."""
    template = asdict(QuantizeConfig(codebook_bits=codebook_bits, calibration_images=calibration_images,
                                     calibration=calibration, per_channel=per_channel, siq=siq_cfg, plus=plus_cfg,
                                     input_bits=input_bits, equalize=equalize, point_widths=dict(point_widths or {}),
                                     channel_steps=channel_steps))
    return {k: v for k, v in template.items() if k not in _CELL_FIELDS}
