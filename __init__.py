"""siq: supervised iterative quantization of small CNNs to integer-only C for microcontrollers.

Python API (the same functions the `siq` command calls; defaults are the command line's):

    import siq
    trained = siq.train("mnist5k", epochs=2, out="out/float.pt")   # Trained: net, data, checkpoint, accuracy
    qm = siq.quantize(trained, method="siq", conv_bits=4, act_bits=4, out="out/quantized.pt")  # QuantizedModel
    lm = siq.export(qm, "out/firmware")                             # LoweredModel; siq_model.c/.h on disk
    report = siq.verify("out/firmware")                             # PyTorch = numpy = host C, bit for bit
    siq.target("out/firmware", cpu="cortex-m4")                     # the same on a Cortex-M in QEMU

Also: pipeline (all of it into one folder), evaluate, model_size (MACs and parameters per layer, as `siq arch`
prints them), load_float, load_quantized, train_config and
quantize_config (checked configs), TrainConfig, QuantizeConfig, SIQConfig, SIQPlusConfig, SiqError.

The repository's folders are installed under this one namespace: ``siq.training`` (data, networks, training,
quantizers, integer reference), ``siq.codegen`` (lowering, memory plan, packing, rendering, host and target
builds, command line) and ``siq.firmware_template`` (Jinja2 C templates, board support, QEMU plugin).
"""
from siq.codegen.api import (Trained, evaluate, export, load_float, load_quantized, model_size, pipeline, quantize,
                             quantize_config, target, train, train_config, verify)
from siq.training.errors import SiqError
from siq.training.quantizers import QuantizeConfig, SIQConfig, SIQPlusConfig
from siq.training.train import TrainConfig
from siq.version import __version__

__all__ = ["train", "quantize", "export", "verify", "target", "pipeline", "evaluate", "model_size", "load_float",
           "load_quantized", "train_config", "quantize_config", "Trained", "TrainConfig", "QuantizeConfig",
           "SIQConfig", "SIQPlusConfig", "SiqError", "__version__"]
