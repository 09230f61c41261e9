"""The README's "Bring your own model" example runs as written: a PyTorch CNN trained in plain PyTorch, imported,
quantized with SIQ W4A4 on its npz data, exported, verified on the host and on a Cortex-M4, 0 mismatches."""
from __future__ import annotations

import ast
import re
import subprocess
import sys

from conftest import readme_python_block


def readme_example() -> str:
    return readme_python_block("Bring your own model")


def test_readme_bring_your_own_model_example_runs_end_to_end(tmp_path):
    code = readme_example()
    for call in ("siq.from_torch(", "siq.quantize(", "siq.export(", "siq.verify(", "siq.target("):
        assert call in code
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = dict(re.findall(r"^(float accuracy|W4A4 integer accuracy|host mismatches|cortex-m4 mismatches) "
                              r"(.*)$", result.stdout, re.M))
    assert float(printed["float accuracy"]) > 0.8, result.stdout
    assert float(printed["W4A4 integer accuracy"]) > 0.8, result.stdout
    assert ast.literal_eval(printed["host mismatches"]) == {"torch_quant": 0, "host_c": 0, "host_c_class": 0}
    assert printed["cortex-m4 mismatches"] == "0"
    assert "-> layer 0: conv" in result.stdout  # the import report
    for name in ("digits.npz", "out/float.pt", "out/quantized.pt", "out/firmware/siq_model.c"):
        assert (tmp_path / name).is_file(), name
