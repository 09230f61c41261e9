"""PyTorch import: a module (traced with torch.export) or a saved torch.export program (.pt2) -> siq layers.

torch.export gives one graph of ATen operations whatever the model's Python looks like (nn.Sequential, a custom
forward with `x + y` and `torch.cat`, functional calls), with every parameter and buffer named by its module path
(graph_signature), each node's output shape (meta["val"]) and the module it came from (meta["nn_module_stack"]),
which names the module in refusals (an LSTM shows up as its first ATen op).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import SiqError
from .graph import IDENTITY, ZERO_PAD, Imported, Op, build, check_outputs, make_net, refuse, siq_input
from .ops import (ACTIVATION_REASON, MODULE_REASONS, OUTPUT_REASON, conv_layer, flatten_or_identity, pool_layer,
                  spatial_mean)

PASS_THROUGH = {"aten.clone", "aten.contiguous", "aten.alias", "aten.detach", "aten.lift_fresh_copy"}
IGNORED = {"aten._assert_tensor_metadata", "aten.sym_constrain_range_for_size", "aten._assert_scalar",
           "aten.sym_size"}  # bookkeeping: no tensor flows through them
POOLS = {"aten.max_pool2d": "max", "aten.max_pool1d": "max", "aten.avg_pool2d": "avg", "aten.avg_pool1d": "avg"}
HARDTANH_DEFAULTS = (-1.0, 1.0)  # nn.Hardtanh's min_val, max_val
RESHAPES = {"aten.view", "aten.reshape", "aten._unsafe_view", "aten.flatten", "aten.squeeze", "aten.unsqueeze"}


def _base(target) -> str:
    """aten.conv2d.default -> aten.conv2d; operator.getitem -> getitem."""
    return ".".join(str(target).split(".")[:2]) if isinstance(target, torch._ops.OpOverload) else \
        getattr(target, "__name__", str(target))


def _shape(node) -> tuple[int, ...] | None:
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return tuple(int(d) if not isinstance(d, torch.SymInt) else -1 for d in val.shape[1:]) \
        if isinstance(val, torch.Tensor) else None


def _module_of(node) -> tuple[str, str] | None:
    """(module path, class name) of the innermost module that made this node, if any."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path, cls = list(stack.values())[-1]
    return path, (cls if isinstance(cls, str) else cls.__name__).rsplit(".", 1)[-1]


class _Converter:
    def __init__(self, program: torch.export.ExportedProgram):
        sig = program.graph_signature
        self.params = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
                       **getattr(sig, "inputs_to_lifted_tensor_constants", {})}
        self.tensors = {**program.state_dict, **program.constants}
        self.user_inputs = list(sig.user_inputs)
        self.graph = program.graph

    def param(self, arg, node, what: str):
        """(source name, tensor) of a weight argument, which must be a parameter, buffer or constant."""
        if arg is None:
            return None
        if not isinstance(arg, torch.fx.Node) or arg.name not in self.params:
            raise self.refuse(node, f"its {what} is computed at run time, not a stored parameter")
        source = self.params[arg.name]
        return source, self.tensors[source].detach()

    def refuse(self, node, why: str) -> SiqError:
        module = _module_of(node)
        if module is not None and module[1] in MODULE_REASONS:  # an LSTM is refused as an LSTM, not as aten.zeros
            return refuse(module[0], f"torch.nn.{module[1]}", MODULE_REASONS[module[1]])
        where = f", in module {module[0]} ({module[1]})" if module and module[0] else ""
        return refuse(node.name, f"{node.target}{where}", why)

    def convert(self) -> tuple[list[Op], str, tuple, str]:
        if len(self.user_inputs) != 1:
            raise SiqError(f"cannot import: the model takes {len(self.user_inputs)} inputs; siq's take one image "
                           "or signal batch")
        x = next(n for n in self.graph.nodes if n.op == "placeholder" and n.name == self.user_inputs[0])
        shape = _shape(x)
        if shape is None or len(shape) not in (2, 3) or min(shape) < 1:
            raise refuse(x.name, "input", f"the input must be [N, C, H, W] or [N, C, L] with fixed sizes, got "
                         f"{None if shape is None else [-1, *shape]}")
        for node in self.graph.nodes:  # a recurrent module is named before the ops that feed it
            module = _module_of(node) if node.op == "call_function" else None
            if module is not None and module[1] in MODULE_REASONS:
                raise self.refuse(node, MODULE_REASONS[module[1]])
        ops, output = [], None
        for node in self.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                outs = node.args[0]
                if len(outs) != 1 or not isinstance(outs[0], torch.fx.Node):
                    raise SiqError(f"cannot import: the model returns {len(outs)} values; siq's return one tensor "
                                   "of class scores")
                output = outs[0].name
                continue
            if _base(node.target) in IGNORED:
                continue
            ops.extend(self.node(node))
        return ops, x.name, shape, output

    def node(self, node) -> list[Op]:
        base, args = _base(node.target), list(node.args)
        kw = node.kwargs
        inputs = tuple(a.name for a in args[:1] if isinstance(a, torch.fx.Node))

        module = _module_of(node)
        kind = f"{node.target} ({module[0]}: {module[1]})" if module and module[0] else str(node.target)

        def op(layer, params=None, reads=inputs, output=node.name):
            return Op(node.name, kind, layer, reads, output, _shape(node), params or {})

        in_shape = _shape(args[0]) if args and isinstance(args[0], torch.fx.Node) else None
        if base in ("aten.conv2d", "aten.conv1d", "aten.convolution"):
            return [op(*self.conv(node, base, args))]
        if base == "aten.linear":
            if in_shape is None or len(in_shape) != 1:
                raise self.refuse(node, f"a linear layer on a {[-1, *(in_shape or ())]} tensor: siq's dense layers "
                                  "take flat [N, features] vectors (flatten first)")
            weight, bias = self.param(args[1], node, "weight"), self.param(args[2] if len(args) > 2 else None,
                                                                             node, "bias")
            bias = bias or (None, torch.zeros(weight[1].shape[0]))
            return [op({"type": "dense", "out": int(weight[1].shape[0])}, {"weight": weight, "bias": bias})]
        if base in ("aten.batch_norm", "aten._native_batch_norm_legit_no_training"):
            return [op(*self.batchnorm(node, base, args, kw))]
        if base in ("aten.relu", "aten.relu_"):
            return [op({"type": "relu"})]
        if base in ("aten.relu6", "aten.relu6_"):
            return [op({"type": "clip", "max": 6.0})]
        if base in ("aten.hardtanh", "aten.hardtanh_", "aten.clamp", "aten.clamp_min"):
            hardtanh = base in ("aten.hardtanh", "aten.hardtanh_")
            low_default, high_default = HARDTANH_DEFAULTS if hardtanh else (None, None)
            low = args[1] if len(args) > 1 else kw.get("min", low_default)
            high = args[2] if len(args) > 2 else kw.get("max", high_default)
            if low != 0:
                raise self.refuse(node, f"a clamp from {low}: siq's clip activations start at 0 (relu, relu6)")
            return [op({"type": "relu"} if high is None else {"type": "clip", "max": float(high)})]
        if base in POOLS:
            pool = POOLS[base]
            names = ("kernel_size", "stride", "padding") + (("dilation", "ceil_mode") if pool == "max" else
                                                            ("ceil_mode", "count_include_pad", "divisor_override"))
            values = {**dict(zip(names, args[1:])), **kw}
            layer = pool_layer(pool, values["kernel_size"], values.get("stride"), values.get("padding", 0),
                               count_include_pad=values.get("count_include_pad", True),
                               dilation=values.get("dilation", 1), divisor=values.get("divisor_override"))
            if isinstance(layer, str):
                raise self.refuse(node, layer)
            return [op(layer)]
        if base in ("aten.adaptive_avg_pool2d", "aten.adaptive_avg_pool1d", "aten.mean"):
            layers = spatial_mean(base.split(".")[1], in_shape, *args[1:], **kw)
            if isinstance(layers, str):
                raise self.refuse(node, layers)
            if len(layers) == 1:
                return [op(layers[0])]
            pooled = f"{node.name}.pooled"
            return [Op(node.name, kind, layers[0], inputs, pooled), op(layers[1], reads=(pooled,))]
        if base in RESHAPES:
            for a in args[1:]:
                for d in (a if isinstance(a, (list, tuple)) else [a]):
                    if isinstance(d, torch.fx.Node) and not (_base(d.target) == "aten.sym_size" and d.args[1] == 0):
                        raise self.refuse(node, "a dynamic reshape: its target shape is computed at run time")
            layer = flatten_or_identity(in_shape, _shape(node))
            if isinstance(layer, str):
                raise self.refuse(node, layer)
            return [op(layer)]
        if base in ("aten.pad", "aten.constant_pad_nd"):
            return [op(self.pad(node, base, args, kw))]
        if base in ("aten.dropout", "aten.dropout_", "aten.feature_dropout"):
            return [op({"type": "dropout", "p": float(args[1]) if len(args) > 1 else 0.5})]
        if base in PASS_THROUGH or (base == "getitem" and args[1] == 0 and self.multi(args[0])):
            return [op(IDENTITY)]
        if base in ("aten.add", "aten.add_"):
            if len(args) < 2 or not all(isinstance(a, torch.fx.Node) and a.name not in self.params
                                        for a in args[:2]):
                raise self.refuse(node, "adds a constant or a parameter: siq adds two computed tensors only")
            if kw.get("alpha", 1) != 1:
                raise self.refuse(node, "an add with alpha != 1")
            return [op({"type": "add"}, reads=(args[0].name, args[1].name))]
        if base == "aten.cat":
            dim = args[1] if len(args) > 1 else kw.get("dim", 0)
            rank = len(_shape(args[0][0]) or ()) + 1
            if dim % rank != 1:
                raise self.refuse(node, f"concatenates along axis {dim}: siq concatenates channels (axis 1) only")
            return [op({"type": "concat"}, reads=tuple(a.name for a in args[0]))]
        reason = ACTIVATION_REASON.get(base.split(".")[-1])
        if reason:
            last = any(u.op == "output" for u in node.users)
            raise self.refuse(node, OUTPUT_REASON if last else reason)
        raise self.refuse(node, "siq has no layer for this operation")

    def pad(self, node, base, args, kw) -> dict:
        """A zero pad of the last one or two axes (PyTorch's order: left, right[, top, bottom])."""
        mode = args[2] if len(args) > 2 and base == "aten.pad" else kw.get("mode", "constant")
        value = (args[3] if len(args) > 3 else kw.get("value")) if base == "aten.pad" else \
            (args[2] if len(args) > 2 else kw.get("value", 0))
        if mode != "constant":
            raise self.refuse(node, f"pad mode {mode!r}: siq pads with zeros only")
        if value:
            raise self.refuse(node, f"pads with {value}: siq pads with zeros only")
        pads = list(args[1]) + [0] * (4 - len(args[1]))
        if len(args[1]) not in (2, 4) or (len(args[1]) == 4 and len(_shape(args[0]) or ()) != 3):
            raise self.refuse(node, "pads an axis other than a map's height and width")
        left, right, top, bottom = pads
        return {"type": ZERO_PAD, "pads": [top, bottom, left, right]}

    def batch_size(self) -> int:
        """The input's batch size if the program fixed it, else 2."""
        x = next(n for n in self.graph.nodes if n.op == "placeholder" and n.name == self.user_inputs[0])
        batch = x.meta["val"].shape[0]
        return batch if isinstance(batch, int) else 2

    def multi(self, node) -> bool:
        return _base(node.target) == "aten._native_batch_norm_legit_no_training"

    def conv(self, node, base, args):
        names = ("input", "weight", "bias", "stride", "padding", "dilation")
        values = dict(zip(names, args))
        values.update({k: v for k, v in node.kwargs.items() if k in names + ("groups",)})
        if base == "aten.convolution":
            if args[6]:
                raise self.refuse(node, "a transposed convolution")
            groups = args[8]
        else:
            groups = node.kwargs.get("groups", args[6] if len(args) > 6 else 1)
        weight = self.param(values["weight"], node, "weight")
        bias = self.param(values.get("bias"), node, "bias") or (None, torch.zeros(weight[1].shape[0]))
        layer = conv_layer(weight[1], values.get("stride", 1), values.get("padding", 0), values.get("dilation", 1),
                           groups)
        if isinstance(layer, str):
            raise self.refuse(node, layer)
        w = weight[1] if weight[1].dim() == 4 else weight[1].unsqueeze(2)
        return layer, {"weight": (weight[0], w), "bias": bias}

    def batchnorm(self, node, base, args, kw):
        if base == "aten.batch_norm":
            _, weight, bias, mean, var, training, momentum, eps = args[:8]
            if training:
                raise self.refuse(node, "batch norm in training mode (call model.eval() before importing)")
        else:
            _, weight, bias, mean, var, momentum, eps = args[:7]
        mean, var = self.param(mean, node, "running mean"), self.param(var, node, "running variance")
        if mean is None or var is None:
            raise self.refuse(node, "batch norm without running statistics (track_running_stats=False) "
                              "normalizes by each batch")
        channels = mean[1].shape[0]
        weight = self.param(weight, node, "weight") or (None, torch.ones(channels))
        bias = self.param(bias, node, "bias") or (None, torch.zeros(channels))
        momentum = 0.1 if momentum is None else float(momentum)
        return ({"type": "batchnorm", "eps": float(eps), "momentum": momentum},
                {"weight": weight, "bias": bias, "running_mean": mean, "running_var": var})


def import_program(program: torch.export.ExportedProgram, name: str, example: torch.Tensor | None = None
                   ) -> Imported:
    """The siq float model of an exported program, its outputs checked against the program's on `example`
    (default: a seeded uniform [0, 1) batch of the program's input shape); SiqError beyond 1e-5 relative."""
    converter = _Converter(program)
    ops, graph_input, shape, output = converter.convert()
    arch, state, mapping, report = build(ops, graph_input, shape, output, name)
    net = make_net(arch, state)
    if example is None:
        batch = converter.batch_size()
        example = torch.rand((batch, *shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        check_outputs(program.module()(example), net(siq_input(example).float()), "the PyTorch model")
    return Imported(arch, net, mapping, report)


def from_torch(module: torch.nn.Module, example_input: torch.Tensor, name: str | None = None) -> Imported:
    """Trace `module` in eval mode with torch.export on `example_input` ([N, C, H, W] or [N, C, L]) and import
    it; its training mode is restored afterwards."""
    if not isinstance(module, torch.nn.Module) or not isinstance(example_input, torch.Tensor):
        raise SiqError("from_torch needs an nn.Module and an example input tensor [N, C, H, W] or [N, C, L]")
    was_training = module.training
    module.eval()
    try:
        try:
            program = torch.export.export(module, (example_input,))
        except Exception as exc:  # noqa: BLE001 - torch.export raises many types; its first line says why
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SiqError(f"cannot import: torch.export cannot trace the model ({first[:200]})") from None
        return import_program(program, name or type(module).__name__, example_input)
    finally:
        module.train(was_training)


def load_exported(path: str | Path) -> Imported:
    """Import a program saved with torch.export.save (.pt2); checked on a seeded example batch of its shape."""
    path = Path(path)
    try:
        program = torch.export.load(path)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign archive fails in many ways
        raise SiqError(f"{path} is not a readable torch.export program ({type(exc).__name__}): save it with "
                       "torch.export.save(torch.export.export(model, (example,)), path)") from None
    return import_program(program, path.stem)
