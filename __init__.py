"""siq: supervised iterative quantization of small CNNs to integer-only C for microcontrollers.

The repository's folders are installed under this one namespace: ``siq.training`` (data, networks, training,
quantizers, integer reference), ``siq.codegen`` (lowering, memory plan, packing, rendering, host and target
builds, command line) and ``siq.firmware_template`` (Jinja2 C templates, board support, QEMU plugin).
"""

__version__ = "0.1.0"
