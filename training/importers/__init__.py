"""Bring your own model: a PyTorch module, a saved torch.export program (.pt2) or an ONNX file becomes a siq float
network (an Arch and its weights), ready for quantization as if `siq train` had made it.

Modules: graph (the shared wiring of source operations into an architecture, the report, the exactness check),
ops (which conv, pool, mean and reshape siq can run), torch_graph (torch.export's ATen graph), onnx_graph (ONNX).
"""
from .graph import Imported, Op, check_outputs, refuse, siq_input
from .torch_graph import from_torch, import_program, load_exported


def load_onnx(path) -> Imported:
    """Import an ONNX file (onnx_graph.load_onnx)."""
    # onnx takes a second or more to import: only ONNX imports pay for it, not every siq command
    from .onnx_graph import load_onnx as load  # noqa: PLC0415
    return load(path)


__all__ = ["Imported", "Op", "check_outputs", "from_torch", "import_program", "load_exported", "load_onnx", "refuse",
           "siq_input"]
