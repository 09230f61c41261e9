"""siq: supervised iterative quantization of small CNNs to integer-only C for microcontrollers.

Python API (the same functions the `siq` command calls; defaults are the command line's):

    import siq
    trained = siq.train("mnist5k", epochs=2, out="out/float.pt")   # Trained: net, data, checkpoint, accuracy
    qm = siq.quantize(trained, method="siq", conv_bits=4, act_bits=4, out="out/quantized.pt")  # QuantizedModel
    lm = siq.export(qm, "out/firmware")                             # LoweredModel; siq_model.c/.h on disk
    report = siq.verify("out/firmware")                             # PyTorch = numpy = host C, bit for bit
    siq.target("out/firmware", cpu="cortex-m4")                     # the same on a Cortex-M in QEMU

Bring your own model: from_torch(module, example_input, dataset="npz:data.npz", out="out/float.pt") imports a
trained PyTorch module (load_onnx an ONNX file, import_model either file kind or a .pt2 torch.export program);
quantize takes what it returns. README.md, "Bring your own model", runs it end to end.

Also: pipeline (all of it into one folder), fit (per-layer widths chosen to fit a flash/RAM/instruction
budget), evaluate, model_size (MACs and parameters per layer, as `siq arch` prints them), load_float,
load_quantized, train_config and
quantize_config (checked configs), TrainConfig, QuantizeConfig, SIQConfig, SIQPlusConfig, SiqError.

The repository's folders are installed under this one namespace: ``siq.training`` (data, networks, training,
quantizers, integer reference), ``siq.codegen`` (lowering, memory plan, packing, rendering, host and target
builds, command line) and ``siq.firmware_template`` (Jinja2 C templates, board support, QEMU plugin).
"""
from siq.codegen.api import (Trained, evaluate, export, fit, from_torch, import_model, load_float, load_onnx,
                             load_quantized, model_size, pipeline, quantize, quantize_config, target, train,
                             train_config, verify)
from siq.training.importers import Imported
from siq.training.errors import SiqError
from siq.training.quantizers import QuantizeConfig, SIQConfig, SIQPlusConfig
from siq.training.train import TrainConfig
from siq.version import __version__

__all__ = ["from_torch", "load_onnx", "import_model", "Imported", "train", "quantize", "export", "verify", "target",
           "pipeline", "fit", "evaluate", "model_size", "load_float",
           "load_quantized", "train_config", "quantize_config", "Trained", "TrainConfig", "QuantizeConfig",
           "SIQConfig", "SIQPlusConfig", "SiqError", "__version__"]
