"""The part of an import every front end shares: a list of source operations, each already translated to one siq
layer (or to nothing), becomes an architecture, a state dict and a report.

A front end (torch_graph.py, onnx_graph.py) walks its graph in topological order and emits one `Op` per source
node: the siq layer as its architecture-file dict, the tensors it reads and writes (source names), its output
shape, and its weights as siq state names -> (source parameter name, tensor). Here the tensors are wired:
a layer reading the previous layer's output is written as it always was, anything else gets the branch fields of
the architecture syntax (`name` on the producer, `input` or `inputs` on the reader). Every refusal is one
SiqError naming the source node, its op type and why (`refuse`).
"""
from __future__ import annotations

import re
from pathlib import Path
from dataclasses import dataclass, field

import torch

from ..arch import Arch
from ..errors import SiqError
from ..integer import check_lowerable
from ..nets import Net

NETWORK_INPUT = "input"  # the architecture syntax's reserved name of the network input
IDENTITY = None          # an Op whose layer is IDENTITY passes its input through (dropout folded, clone, ...)
ZERO_PAD = "zero-pad"    # a pseudo layer: zero padding, merged into the conv that reads it


def refuse(node: str, op: str, why: str) -> SiqError:
    """The one-line refusal every front end raises: the node, its op type and the reason."""
    return SiqError(f"cannot import node {node!r} ({op}): {why}")


@dataclass
class Op:
    """One source node as a siq layer. params: siq state name ("weight", "bias", "running_mean", ...) ->
    (source parameter name, tensor), the tensor already in siq's layout."""
    node: str
    kind: str
    layer: dict | None
    inputs: tuple[str, ...]
    output: str
    shape: tuple[int, ...] | None = None  # the source's output shape without the batch axis
    params: dict = field(default_factory=dict)
    note: str | None = None  # what an IDENTITY op became, when more than "passes its input through"


@dataclass
class Imported:
    """An imported model: the architecture, the float network holding the source's weights, the state mapping
    (source parameter name -> siq state key) and the report (one row per source node: what it became)."""
    arch: Arch
    net: Net
    mapping: dict[str, str]
    report: list[dict]
    checkpoint: Path | None = None  # the checkpoint file, once saved (codegen/imports.py)
    accuracy: float | None = None   # float test accuracy on the dataset it was saved with

    def report_text(self) -> str:
        width = max((len(r["node"]) for r in self.report), default=4)
        op_width = max((len(r["op"]) for r in self.report), default=4)
        return "\n".join(f"{r['node']:<{width}}  {r['op']:<{op_width}}  -> {r['siq']}" for r in self.report)


def _describe(index: int, layer: dict) -> str:
    fields = ", ".join(f"{k}={v}" for k, v in layer.items() if k != "type")
    return f"layer {index}: {layer['type']}" + (f" ({fields})" if fields else "")


def _compact_pad(pad: list[int]):
    """[top, bottom, left, right] as the architecture files write it: one number when all four are equal."""
    return pad[0] if len(set(pad)) == 1 else list(pad)


def _siq_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A source shape (without batch) as siq writes it: a 1-D map (C, L) is (C, 1, L)."""
    return (shape[0], 1, shape[1]) if len(shape) == 2 else tuple(shape)


class _Wiring:
    """Tensor names -> the layer that produced them, aliases (identity ops) and pending zero pads."""

    def __init__(self, graph_input: str):
        self.graph_input = graph_input
        self.alias: dict[str, str] = {}
        self.pads: dict[str, tuple[str, tuple, Op]] = {}
        self.producer: dict[str, int] = {}
        self.layers: list[dict] = []
        self.outputs: list[str] = []  # outputs[i]: the tensor layer i computes
        self.names: set[str] = {NETWORK_INPUT}

    def resolve(self, tensor: str) -> str:
        while tensor in self.alias:
            tensor = self.alias[tensor]
        return tensor

    def name_of(self, tensor: str, reader: Op) -> str:
        """The architecture name of a tensor a layer reads out of order; names its producer on first use."""
        if tensor == self.graph_input:
            return NETWORK_INPUT
        if tensor not in self.producer:
            raise refuse(reader.node, reader.kind, f"reads {tensor!r}, which no supported layer computes "
                         "(a constant or a parameter used as data)")
        layer = self.layers[self.producer[tensor]]
        if "name" not in layer:
            base = re.sub(r"[^A-Za-z0-9_]+", "_", re.sub(r"_output_\d+$", "", tensor)).strip("_") or "t"
            name, k = base, 1
            while name in self.names:
                name, k = f"{base}_{k}", k + 1
            self.names.add(name)
            layer["name"] = name
        return layer["name"]

    def previous(self) -> str:
        """The tensor the next layer reads by default: the last layer's output, or the network input."""
        return self.outputs[-1] if self.outputs else self.graph_input


def build(ops: list[Op], graph_input: str, input_shape: tuple[int, ...], graph_output: str, name: str
          ) -> tuple[Arch, dict, dict, list[dict]]:
    """(architecture, state dict, mapping, report) of the ops; SiqError on anything siq cannot run."""
    wiring, state, mapping, report = _Wiring(graph_input), {}, {}, []
    shapes = {}  # layer index -> the source's output shape, checked against siq's after the architecture is built
    for op in ops:
        if op.layer is IDENTITY:
            wiring.alias[op.output] = wiring.resolve(op.inputs[0])
            report.append({"node": op.node, "op": op.kind, "siq": op.note or "(nothing: passes its input through)"})
            continue
        if op.layer["type"] == ZERO_PAD:
            wiring.pads[op.output] = (wiring.resolve(op.inputs[0]), op.layer["pads"], op)
            report.append({"node": op.node, "op": op.kind, "siq": "(zero padding of the conv that reads it)"})
            continue
        layer, reads = dict(op.layer), [wiring.resolve(t) for t in op.inputs]
        for t in reads:
            if t in wiring.pads and (layer["type"] != "conv" or len(reads) != 1):
                pad_op = wiring.pads[t][2]
                raise refuse(pad_op.node, pad_op.kind, "zero padding is supported only directly before a conv")
        if reads and reads[0] in wiring.pads:
            reads[0], extra, _ = wiring.pads[reads[0]]
            layer["pad"] = [a + b for a, b in zip(extra, layer["pad"])]
        if layer["type"] == "conv":
            layer["pad"] = _compact_pad(layer["pad"])
        index = len(wiring.layers)
        if layer["type"] in ("add", "concat"):
            layer["inputs"] = [wiring.name_of(t, op) for t in reads]
        elif reads[0] != wiring.previous():
            layer["input"] = wiring.name_of(reads[0], op)
        wiring.layers.append(layer)
        wiring.outputs.append(op.output)
        wiring.producer[op.output] = index
        if op.shape is not None:
            shapes[index] = _siq_shape(op.shape)
        for key, (source, tensor) in op.params.items():
            state[f"layers.{index}.{key}"] = tensor
            if source is not None:
                mapping[source] = f"layers.{index}.{key}"
        report.append({"node": op.node, "op": op.kind, "siq": _describe(index, layer)})
    out = wiring.resolve(graph_output)
    if not wiring.layers or wiring.producer.get(out) != len(wiring.layers) - 1:
        raise SiqError("cannot import: the model's output is not its last layer (siq's architectures end with "
                       "the class scores of their last layer)")
    arch = _arch(name, input_shape, wiring.layers, shapes, report)
    return arch, state, mapping, report


def _arch(name: str, input_shape: tuple, layers: list[dict], shapes: dict, report: list[dict]) -> Arch:
    rows = [r for r in report if r["siq"].startswith("layer ")]  # rows[i] is layer i's source node
    try:
        arch = Arch.from_dict({"name": name, "input": list(input_shape), "layers": layers})
    except SiqError as exc:
        raise SiqError(f"cannot import: the graph is not an architecture siq can run: {exc}") from None
    for i, shape in enumerate(arch.shapes()):
        if i in shapes and tuple(shape) != shapes[i]:
            raise refuse(rows[i]["node"], rows[i]["op"], f"siq computes shape {list(shape)} where the source "
                         f"computes {list(shapes[i])} (ceil mode, or an unsupported window)")
    try:
        check_lowerable(arch)
    except SiqError as exc:
        raise SiqError(f"cannot import: the integer C cannot run this network: {exc}") from None
    return arch


def make_net(arch: Arch, state: dict) -> Net:
    """The float network holding the imported weights (float32, eval mode); every state key must match."""
    net = Net(arch)
    expected = net.state_dict()
    for key, value in expected.items():  # batch norm's counter has no source value: keep the fresh one
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise SiqError(f"cannot import: internal state mapping mismatch (missing {missing}, unexpected {extra})")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise SiqError(f"cannot import: {key} has shape {list(value.shape)}, the architecture needs "
                           f"{list(expected[key].shape)}")
    net.load_state_dict({k: v.detach().to(expected[k].dtype).clone() for k, v in state.items()})
    return net.eval()


def siq_input(x: torch.Tensor) -> torch.Tensor:
    """A source model's input batch as siq's network takes it: a 1-D batch [N, C, L] is [N, C, 1, L]."""
    return x.unsqueeze(2) if x.dim() == 3 else x


def check_outputs(expected: torch.Tensor, got: torch.Tensor, what: str, tolerance: float = 1e-5) -> float:
    """The largest difference relative to the largest output magnitude; SiqError above `tolerance`."""
    expected, got = expected.detach().double(), got.detach().double()
    if expected.shape != got.shape:
        raise SiqError(f"cannot import: {what} gives outputs of shape {list(expected.shape)}, the imported model "
                       f"{list(got.shape)}")
    scale = float(expected.abs().max()) or 1.0
    error = float((expected - got).abs().max()) / scale
    if not error <= tolerance:
        raise SiqError(f"cannot import: the imported model's outputs differ from {what}'s by {error:.3g} "
                       f"(relative; the bound is {tolerance:g})")
    return error
