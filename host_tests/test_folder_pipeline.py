"""The paper's §4.2 path end to end: an image folder of varied aspect ratios -> crops -> paper-office ->
quantized firmware, bit-exact, with test predictions summed over each image's crops."""
import json

import numpy as np
from PIL import Image

from test_cli import siq


def _make_folder(root, rng):
    """Three classes that differ in structure: horizontal stripes, vertical stripes, a bright disc."""
    sizes = [(40, 32), (32, 48), (64, 64), (50, 36), (36, 60), (45, 45), (70, 40), (32, 32), (48, 33), (33, 52)]
    for name in ("disc", "hstripes", "vstripes"):
        (root / name).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            y, x = np.mgrid[0:h, 0:w]
            period = rng.integers(5, 9)
            if name == "hstripes":
                img = ((y // period) % 2) * 200
            elif name == "vstripes":
                img = ((x // period) % 2) * 200
            else:
                img = ((x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(w, h) / 3) ** 2) * 220
            img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
            mode = "RGB" if i % 3 == 0 else "L"
            picture = Image.fromarray(img).convert(mode)
            picture.save(root / name / f"{i}.{'jpg' if i % 4 == 0 else 'png'}")


def test_folder_dataset_pipeline(tmp_path):
    _make_folder(tmp_path / "images", np.random.default_rng(0))
    out = tmp_path / "out"
    result = siq("pipeline", "--dataset", f"folder:{tmp_path / 'images'}", "--arch", "paper-office",
                 "--epochs", 4, "--siq-rounds", 1, "--siq-epochs", 1, "--calibration", "float", "--no-target",
                 "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["mismatches"]["torch_quant"] == 0 and report["mismatches"]["host_c"] == 0
    # 30 images, 20% held out per class: accuracy is over source images, from summed crop scores
    assert report["n_test_images"] == 6 and report["n_test"] > 6
    assert report["accuracy"]["host_c"] >= 0.5
    header = (out / "firmware" / "siq_model.h").read_text()
    assert "#define SIQ_MODEL_INPUT_HEIGHT 32" in header and "#define SIQ_MODEL_NUM_CLASSES 3" in header
