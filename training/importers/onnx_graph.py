"""ONNX import (the `onnx` package): Conv, BatchNormalization, Relu, Clip, MaxPool, AveragePool,
GlobalAveragePool, ReduceMean over the map, Add, Concat, Flatten, Gemm, MatMul (+ Add of a bias), Reshape /
Squeeze / Unsqueeze where they flatten, Pad with zeros before a conv, Dropout and Identity; initializers and
Constant nodes are the weights, and nodes computing only from them are folded first.

Shapes come from ONNX shape inference on the file's fixed input shape (a symbolic batch axis is fine). The
imported network is checked against the ONNX reference evaluator (onnx.reference, pure numpy) on a seeded batch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from ..errors import SiqError
from .graph import IDENTITY, ZERO_PAD, Imported, Op, build, check_outputs, make_net, refuse, siq_input
from .ops import (ACTIVATION_REASON, OUTPUT_REASON, RECURRENT, conv_layer, flatten_or_identity, pool_layer,
                  spatial_mean)

REFUSED = {"LSTM": RECURRENT, "GRU": RECURRENT, "RNN": RECURRENT, "Sigmoid": ACTIVATION_REASON["sigmoid"],
           "Tanh": ACTIVATION_REASON["tanh"], "Softmax": ACTIVATION_REASON["softmax"],
           "LogSoftmax": ACTIVATION_REASON["log_softmax"], "HardSigmoid": ACTIVATION_REASON["sigmoid"],
           "LeakyRelu": ACTIVATION_REASON["leaky_relu"], "HardSwish": ACTIVATION_REASON["hardswish"]}
AT_OUTPUT = {"Sigmoid", "Softmax", "LogSoftmax", "HardSigmoid"}  # refused with the output's reason there
RESHAPES = {"Reshape", "Squeeze", "Unsqueeze", "Flatten"}


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _evaluate(model: onnx.ModelProto, node, weights: dict) -> dict:
    """The outputs of a node whose inputs are all stored (an exporter's arithmetic on constants: a pad list
    built by Concat, Reshape, Cast ...), by the ONNX reference evaluator on a graph of that node alone."""
    inputs = [numpy_helper.from_array(np.asarray(weights[name]), name) for name in node.input if name]
    outputs = [onnx.helper.make_empty_tensor_value_info(name) for name in node.output if name]
    graph = onnx.helper.make_graph([node], "fold", [], outputs, initializer=inputs)
    folded = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    values = ReferenceEvaluator(folded).run(None, {})
    return dict(zip([name for name in node.output if name], values))


def _decimal(value: float) -> float:
    """A float32 attribute as the shortest decimal that rounds to it (1e-5, not 9.999999747378752e-06)."""
    return float(str(np.float32(value)))


def _dims(value_info) -> tuple[int, ...] | None:
    """Sizes without the batch axis (-1 where unknown), or None when the rank is unknown."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim[1:])


class _Converter:
    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        computed = []  # the nodes left once everything computed from stored tensors alone is folded
        for node in graph.node:
            if node.op_type == "Constant":
                self.weights[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
            elif node.input and all(name in self.weights for name in node.input if name):
                self.weights.update(_evaluate(model, node, self.weights))
            else:
                computed.append(node)
        used = {name for node in computed for name in node.input}
        slim = onnx.helper.make_graph(
            computed, graph.name, [i for i in graph.input if i.name not in self.weights], list(graph.output),
            initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in self.weights.items() if k in used])
        try:  # shapes on the folded graph: a pad list or a shape built by constant arithmetic is known now
            inferred = onnx.shape_inference.infer_shapes(
                onnx.helper.make_model(slim, opset_imports=model.opset_import, ir_version=model.ir_version))
        except Exception as exc:  # noqa: BLE001 - onnx raises its own InferenceError and others
            raise SiqError(f"cannot import: ONNX shape inference fails on this file ({str(exc)[:150]})") from None
        self.graph = inferred.graph
        self.shapes = {v.name: _dims(v) for v in [*self.graph.value_info, *self.graph.input, *self.graph.output]}
        self.consumers: dict[str, list] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def convert(self):
        inputs = [i for i in self.graph.input if i.name not in self.weights]
        if len(inputs) != 1 or len(self.graph.output) != 1:
            raise SiqError(f"cannot import: the model has {len(inputs)} inputs and {len(self.graph.output)} outputs; "
                           "siq's take one image or signal batch and return one tensor of class scores")
        x = inputs[0]
        shape = self.shapes[x.name]
        if shape is None or len(shape) not in (2, 3) or min(shape) < 1:
            raise refuse(x.name, "input", f"the input must be [N, C, H, W] or [N, C, L] with fixed sizes, got "
                         f"{None if shape is None else [-1, *shape]}")
        for node in self.graph.node:  # what makes the whole model unrunnable is named before the first small op
            if node.op_type in ("LSTM", "GRU", "RNN") or (node.op_type == "Reshape" and
                                                          node.input[1] not in self.weights):
                self.node(node, [])
        ops: list[Op] = []
        for node in self.graph.node:
            ops.extend(self.node(node, ops))
        return ops, x.name, shape, self.graph.output[0].name

    def weight(self, node, index: int, what: str, optional: bool = False):
        """(initializer name, float32 tensor) of input `index`, which must be stored in the file."""
        if index >= len(node.input) or not node.input[index]:
            if optional:
                return None
            raise self.refuse(node, f"has no {what}")
        name = node.input[index]
        if name not in self.weights:
            raise self.refuse(node, f"its {what} is computed at run time, not stored in the file")
        return name, torch.from_numpy(np.array(self.weights[name], dtype=np.float32))

    def refuse(self, node, why: str) -> SiqError:
        return refuse(node.name or node.output[0], node.op_type, why)

    def node(self, node, done: list[Op]) -> list[Op]:
        kind, a = node.op_type, _attrs(node)
        name = node.name or node.output[0]

        def op(layer, params=None, reads=tuple(node.input[:1])):
            return Op(name, kind, layer, tuple(reads), node.output[0], self.shapes.get(node.output[0]), params or {})

        if kind == "Conv":
            return [op(*self.conv(node, a))]
        if kind == "BatchNormalization":
            if a.get("training_mode", 0):
                raise self.refuse(node, "batch norm in training mode")
            params = {k: self.weight(node, i, k) for i, k in
                      enumerate(("weight", "bias", "running_mean", "running_var"), start=1)}
            # ONNX stores them as float32: the shortest decimal of that float32 is the value the user wrote
            layer = {"type": "batchnorm", "eps": _decimal(a.get("epsilon", 1e-5)),
                     "momentum": _decimal(1.0 - _decimal(a.get("momentum", 0.9)))}  # ONNX keeps 1 - PyTorch's
            return [op(layer, params)]
        if kind == "Relu":
            return [op({"type": "relu"})]
        if kind == "Clip":
            low = self.scalar(node, 1, a.get("min"))
            high = self.scalar(node, 2, a.get("max"))
            if low != 0:
                raise self.refuse(node, f"a clip from {low}: siq's clip activations start at 0 (relu, relu6)")
            return [op({"type": "relu"} if high is None else {"type": "clip", "max": _decimal(high)})]
        if kind in ("MaxPool", "AveragePool"):
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
                raise self.refuse(node, f"auto_pad {a['auto_pad'].decode()}: export with explicit pads")
            kernel = a["kernel_shape"]
            layer = pool_layer("max" if kind == "MaxPool" else "avg", kernel, a.get("strides", [1] * len(kernel)),
                               a.get("pads", [0]), count_include_pad=bool(a.get("count_include_pad", 0)),
                               dilation=a.get("dilations", 1))
            if isinstance(layer, str):
                raise self.refuse(node, layer)
            return [op(layer)]
        if kind == "GlobalAveragePool":
            return [op({"type": "globalavgpool"})]
        if kind == "ReduceMean":
            axes = a.get("axes") if len(node.input) < 2 else [int(v) for v in self.weight(node, 1, "axes")[1]]
            layers = spatial_mean("mean", self.shapes.get(node.input[0]), axes, bool(a.get("keepdims", 1)))
            if isinstance(layers, str):
                raise self.refuse(node, layers)
            if len(layers) == 1:
                return [op(layers[0])]
            pooled = f"{node.output[0]}.pooled"
            return [Op(name, kind, layers[0], tuple(node.input[:1]), pooled), op(layers[1], reads=(pooled,))]
        if kind in RESHAPES:
            if kind == "Flatten" and a.get("axis", 1) != 1:
                raise self.refuse(node, f"a flatten from axis {a['axis']}: siq flattens whole samples (axis 1)")
            if kind == "Reshape" and node.input[1] not in self.weights:
                raise self.refuse(node, "a dynamic reshape: its target shape is computed at run time (export with "
                                  "a fixed input shape, without dynamic axes)")
            layer = flatten_or_identity(self.shapes.get(node.input[0]), self.shapes.get(node.output[0]))
            if isinstance(layer, str):
                raise self.refuse(node, layer)
            return [op(layer)]
        if kind in ("Gemm", "MatMul"):
            return [op(*self.dense(node, a))]
        if kind == "Add":
            stored = [i for i in node.input if i in self.weights]
            if not stored:
                return [op({"type": "add"}, reads=tuple(node.input))]
            return self.bias_add(node, done, stored[0])
        if kind == "Concat":
            rank = len(self.shapes.get(node.input[0]) or ()) + 1
            if a.get("axis") % rank != 1:
                raise self.refuse(node, f"concatenates along axis {a.get('axis')}: siq concatenates channels "
                                  "(axis 1) only")
            return [op({"type": "concat"}, reads=tuple(node.input))]
        if kind == "Dropout":
            ratio = self.scalar(node, 1, a.get("ratio", 0.5))
            return [op({"type": "dropout", "p": 0.5 if ratio is None else ratio})]
        if kind == "Identity":
            return [op(IDENTITY)]
        if kind == "Pad":
            return [op(self.pad(node, a))]
        if kind in REFUSED:
            last = kind in AT_OUTPUT and node.output[0] == self.graph.output[0].name
            raise self.refuse(node, OUTPUT_REASON if last else REFUSED[kind])
        raise self.refuse(node, "siq has no layer for this operation")

    def scalar(self, node, index: int, default):
        """An optional scalar input (opset >= 11 Clip / Dropout) or the attribute of older opsets."""
        if index < len(node.input) and node.input[index]:
            return float(self.weight(node, index, "bound")[1].reshape(()))
        return None if default is None else float(default)

    def conv(self, node, a):
        weight = self.weight(node, 1, "weight")
        bias = self.weight(node, 2, "bias", optional=True) or (None, torch.zeros(weight[1].shape[0]))
        auto = a.get("auto_pad", b"NOTSET")
        if auto not in (b"NOTSET", b"VALID"):
            raise self.refuse(node, f"auto_pad {auto.decode()}: export with explicit pads")
        rank = weight[1].dim() - 2
        pads = "valid" if auto == b"VALID" else a.get("pads", [0] * (2 * rank))
        layer = conv_layer(weight[1], a.get("strides", 1), pads, a.get("dilations", 1), a.get("group", 1))
        if isinstance(layer, str):
            raise self.refuse(node, layer)
        w = weight[1] if rank == 2 else weight[1].unsqueeze(2)
        return layer, {"weight": (weight[0], w), "bias": bias}

    def dense(self, node, a):
        """Gemm (y = alpha x B' + beta C) or MatMul (y = x B, B [in, out]) -> a dense layer."""
        shape = self.shapes.get(node.input[0])
        if shape is None or len(shape) != 1:
            raise self.refuse(node, f"a matrix product on a {shape} tensor: siq's dense layers take flat vectors")
        if a.get("transA", 0):
            raise self.refuse(node, "a Gemm with transA")
        source, w = self.weight(node, 1, "weight")
        w = w if node.op_type == "Gemm" and a.get("transB", 0) else w.t()
        w = w * float(a.get("alpha", 1.0))
        bias = self.weight(node, 2, "bias", optional=True) if node.op_type == "Gemm" else None
        if bias is not None:
            bias = (bias[0], (bias[1] * float(a.get("beta", 1.0))).expand(w.shape[0]).clone())
        return {"type": "dense", "out": int(w.shape[0])}, {"weight": (source, w.contiguous()),
                                                           "bias": bias or (None, torch.zeros(w.shape[0]))}

    def bias_add(self, node, done: list[Op], stored: str) -> list[Op]:
        """MatMul + Add(bias), as exporters write a linear layer: the bias joins the dense layer before it."""
        data = next(i for i in node.input if i != stored)
        prev = done[-1] if done else None
        if prev is None or prev.output != data or prev.kind != "MatMul" or prev.params["bias"][0] is not None \
                or len(self.consumers.get(data, [])) != 1:
            raise self.refuse(node, "adds a constant tensor that is not the bias of the matrix product before it")
        bias = self.weight(node, list(node.input).index(stored), "bias")[1].reshape(-1)
        out = prev.params["weight"][1].shape[0]
        prev.params["bias"] = (stored, bias.expand(out).clone())
        return [Op(node.name or node.output[0], "Add", IDENTITY, (data,), node.output[0],
                   note=f"(the bias of {prev.node})")]

    def pad(self, node, a) -> dict:
        mode = a.get("mode", b"constant").decode()
        if mode != "constant":
            raise self.refuse(node, f"pad mode {mode!r}: siq pads with zeros only")
        pads = [int(p) for p in (self.weight(node, 1, "pads")[1] if len(node.input) > 1 else a.get("pads"))]
        value = self.scalar(node, 2, a.get("value", 0.0))
        if value:
            raise self.refuse(node, f"pads with {value}: siq pads with zeros only")
        rank = len(pads) // 2
        begin, end = pads[:rank], pads[rank:]
        if any(begin[:2]) or any(end[:2]) or rank not in (3, 4):
            raise self.refuse(node, "pads the batch or channel axis")
        top, left, bottom, right = ([0] + begin[2:] + [0] + end[2:]) if rank == 3 else (begin[2:] + end[2:])
        return {"type": ZERO_PAD, "pads": [top, bottom, left, right]}


def load_onnx(path: str | Path) -> Imported:
    """Import an ONNX file; the network's outputs are checked against the ONNX reference evaluator on a seeded
    uniform [0, 1) batch of the input's shape (SiqError beyond 1e-5 relative)."""
    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - a foreign or damaged file fails in protobuf or onnx
        raise SiqError(f"{path} is not a readable ONNX file ({type(exc).__name__})") from None
    ops, graph_input, shape, output = _Converter(model).convert()
    arch, state, mapping, report = build(ops, graph_input, shape, output, path.stem)
    net = make_net(arch, state)
    example = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0))
    expected = ReferenceEvaluator(model).run(None, {graph_input: example.numpy()})[0]
    with torch.no_grad():
        check_outputs(torch.from_numpy(np.asarray(expected)), net(siq_input(example)), "the ONNX model")
    return Imported(arch, net, mapping, report)
