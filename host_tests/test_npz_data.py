"""npz: datasets (images, multi-channel maps, 1-D signals; uint8 or float; given or seeded split; class names)
and one end-to-end run on a 1-D signal through a network with batch norm, conv1d, relu6 and global average
pooling: train -> quantize -> export -> verify, with the dataset's class names in the C."""
from __future__ import annotations

import numpy as np
import pytest

import siq
from siq.training.data import load_dataset
from siq.training.errors import SiqError


def _signals(n: int = 160, length: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four classes of 1-D signals in [0, 1]: a bump at one of four places, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    t = np.arange(length)
    x = 0.7 * np.exp(-((t[None, :] - (3 + 6 * y[:, None])) ** 2) / 4.0) + 0.3 * rng.random((n, length))
    return np.clip(x, 0, 1), y


def test_shapes_values_and_split(tmp_path):
    x, y = _signals()
    np.savez(tmp_path / "sig.npz", x=x, y=y, class_names=np.array(["a", "b", "c", "d"]))
    data = load_dataset(f"npz:{tmp_path / 'sig.npz'}", seed=1)
    assert data.image_shape == (1, 1, 24) and data.class_names == ["a", "b", "c", "d"]
    assert len(data.train_x) + len(data.test_x) == 160 and len(data.test_x) == 32
    assert set(data.test_y.tolist()) == {0, 1, 2, 3}  # stratified
    assert np.array_equal(load_dataset(f"npz:{tmp_path / 'sig.npz'}", seed=1).train_x, data.train_x)
    assert data.train_x.dtype == np.uint8 and data.train_x.max() <= 255
    rgb = np.arange(5 * 3 * 4 * 4, dtype=np.uint8).reshape(5, 3, 4, 4)
    np.savez(tmp_path / "rgb.npz", x_train=rgb, y_train=np.arange(5) % 2, x_test=rgb[:2], y_test=np.array([0, 1]))
    given = load_dataset(f"npz:{tmp_path / 'rgb.npz'}")
    assert given.image_shape == (3, 4, 4) and given.class_names == ["0", "1"]
    assert np.array_equal(given.train_x, rgb)  # uint8 values are the pixels, unchanged


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.full((4, 3), 1.5), "y": np.zeros(4, int)}, "must lie in"),
    ({"x": np.zeros((4, 3)), "y": np.zeros(3, int)}, "labels must be 4"),
    ({"x": np.zeros((4, 3))}, "needs arrays x and y"),
    ({"x": np.zeros((4, 3)), "y": np.array([0, 1, 2, 2]), "class_names": np.array(["a", "b"])}, "2 class names"),
])
def test_bad_files_are_refused(arrays, message, tmp_path):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(SiqError, match=message):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


def test_signal_network_end_to_end(tmp_path):
    x, y = _signals()
    np.savez(tmp_path / "sig.npz", x=(x * 255).astype(np.uint8), y=y,
             class_names=np.array(["left", "mid-left", "mid-right", "right"]))
    (tmp_path / "kws.toml").write_text(
        'input = [1, 24]\nlayers = [\n'
        '  {type = "conv1d", out = 4, k = 5, stride = 2, pad = "same"}, {type = "batchnorm"}, {type = "relu6"},\n'
        '  {type = "conv1d", out = 4, k = 3, pad = 1, groups = 4}, {type = "relu"},\n'
        '  {type = "globalavgpool"}, {type = "flatten"}, {type = "dense", out = 4}]\n')
    trained = siq.train(f"npz:{tmp_path / 'sig.npz'}", arch=str(tmp_path / "kws.toml"), out=tmp_path / "f.pt",
                        epochs=2, log=lambda *a: None)
    qm = siq.quantize(trained, method="kmeans", conv_bits=4, fc_bits=4, act_bits=4, log=lambda *a: None)
    assert [l.type for l in qm.arch.layers][:2] == ["conv", "clip"]  # batch norm folded away
    siq.export(qm, tmp_path / "fw", vectors=20, log=lambda *a: None)
    result = siq.verify(tmp_path / "fw", log=lambda *a: None)
    assert result["n_test"] == 32 and set(result["mismatches"].values()) == {0}
    assert '"mid-left"' in (tmp_path / "fw" / "siq_model.c").read_text()
