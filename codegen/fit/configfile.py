"""A quantization configuration as a file: what `siq fit` writes and `siq quantize --config` reads back.

The file is JSON (or the same keys in TOML): QuantizeConfig's fields, with SIQ's and siq+'s settings as the
tables "siq" and "plus". layer_bits maps a weighted layer's index (a string key, as JSON and TOML keys are) to its
index width, and point_widths a quantization point's index to its activation width. Fields left out keep QuantizeConfig's defaults; an unknown field is refused by name.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, fields
from pathlib import Path

from siq.training.errors import SiqError
from siq.training.fileio import atomic_write_bytes
from siq.training.quantizers import QuantizeConfig, SIQConfig, SIQPlusConfig

NESTED = {"siq": SIQConfig, "plus": SIQPlusConfig}


def config_dict(cfg: QuantizeConfig) -> dict:
    """The configuration as JSON-ready values (layer indices as string keys, in layer order)."""
    out = asdict(cfg)
    out["layer_bits"] = {str(i): int(b) for i, b in sorted(cfg.layer_bits.items())}
    out["point_widths"] = {str(p): int(b) for p, b in sorted(cfg.point_widths.items())}
    out["channel_layers"] = sorted(int(i) for i in cfg.channel_layers)
    return out


def write_config(cfg: QuantizeConfig, path: str | Path) -> None:
    atomic_write_bytes(path, (json.dumps(config_dict(cfg), indent=2) + "\n").encode())


def _known(where: str, data: dict, cls) -> dict:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SiqError(f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    return data


def read_config(path: str | Path) -> QuantizeConfig:
    """The QuantizeConfig a file holds; SiqError naming the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SiqError(f"cannot read the configuration {path} ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise SiqError(f"{path} is not a {'TOML' if path.suffix.lower() == '.toml' else 'JSON'} configuration "
                       f"({exc})") from None
    if not isinstance(data, dict):
        raise SiqError(f"{path}: a configuration is a table of QuantizeConfig settings")
    data = dict(_known(str(path), data, QuantizeConfig))
    for key, cls in NESTED.items():
        if key in data:
            if not isinstance(data[key], dict):
                raise SiqError(f"{path}: {key} must be a table of settings")
            data[key] = cls(**_known(f"{path}: {key}", data[key], cls))
    try:
        for key in ("layer_bits", "point_widths"):
            if key in data:
                if not isinstance(data[key], dict):
                    raise ValueError(f"{key} must map layer indices to widths")
                data[key] = {int(i): b for i, b in data[key].items()}
        if "channel_layers" in data:
            data["channel_layers"] = [int(i) for i in data["channel_layers"]]
    except (TypeError, ValueError) as exc:
        raise SiqError(f"{path}: {exc}") from None
    for key in ("layer_bits", "point_widths"):
        for i, b in data.get(key, {}).items():
            if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 8:
                raise SiqError(f"{path}: {key} of layer {i} must be a whole number from 1 to 8, got {b!r}")
    return QuantizeConfig(**data)
