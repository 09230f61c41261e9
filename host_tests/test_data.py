"""Dataset loading: bundled sets, IDX files, image folders, validation splits and padding."""
import gzip
import json
import struct

import numpy as np
import pytest
from PIL import Image

from siq.training.data import (DATASETS, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, Dataset, image_crops,
                           load_dataset, read_idx_images, read_idx_labels)
from siq.training.errors import SiqError


# --- mnist5k -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist5k():
    return load_dataset("mnist5k", seed=0)


def test_mnist5k_shapes_and_stratification(mnist5k):
    d = mnist5k
    assert d.name == "mnist5k"
    assert d.train_x.shape == (4000, 1, 28, 28) and d.test_x.shape == (1000, 1, 28, 28)
    assert d.train_x.dtype == np.uint8 and d.test_x.dtype == np.uint8
    assert d.train_y.dtype == np.int64 and d.test_y.dtype == np.int64
    assert d.image_shape == (1, 28, 28) and d.num_classes == 10
    assert d.class_names == [str(i) for i in range(10)]
    assert d.test_groups is None
    assert np.bincount(d.test_y, minlength=10).tolist() == [100] * 10
    assert np.bincount(d.train_y, minlength=10).tolist() == [400] * 10
    assert d.train_x.max() > 200  # real 0..255 pixels, not 0..1
    json.dumps(d.info)
    assert d.info["split_seed"] == 0


def test_mnist5k_deterministic_per_seed(mnist5k):
    again = load_dataset("mnist5k", seed=0)
    for a, b in [(mnist5k.train_x, again.train_x), (mnist5k.train_y, again.train_y),
                 (mnist5k.test_x, again.test_x), (mnist5k.test_y, again.test_y)]:
        np.testing.assert_array_equal(a, b)
    other = load_dataset("mnist5k", seed=1)
    assert not np.array_equal(mnist5k.test_x, other.test_x)
    assert np.bincount(other.test_y, minlength=10).tolist() == [100] * 10


def test_mnist5k_train_and_test_disjoint(mnist5k):
    train = {bytes(x) for x in mnist5k.train_x.reshape(4000, -1)}
    test = {bytes(x) for x in mnist5k.test_x.reshape(1000, -1)}
    assert len(train | test) >= 4990  # the subset has (nearly) no duplicate images
    assert len(train & test) <= 5


# --- fashion (installed system-wide here and in CI: missing is a failure, not a skip) ------------------

def test_fashion_from_system_path():
    d = load_dataset("fashion")
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert d.train_x.dtype == np.uint8
    assert d.num_classes == 10 and d.class_names[0] == "T-shirt/top" and d.class_names[9] == "Ankle boot"
    assert np.bincount(d.test_y, minlength=10).tolist() == [1000] * 10
    json.dumps(d.info)


def test_fashion_missing_data_dir_says_how_to_fix(tmp_path):
    with pytest.raises(SiqError, match="apt-get install dataset-fashion-mnist.*--data-dir"):
        load_dataset("fashion", data_dir=str(tmp_path))


# --- IDX files ---------------------------------------------------------------------------------------

def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_idx(path, magic, array, compress):
    data = idx_bytes(magic, array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7).astype(np.uint8)
    got = read_idx_images(write_idx(tmp_path / "img", IDX_IMAGES_MAGIC, images, compress))
    assert got.dtype == np.uint8 and got.shape == (7, 1, 5, 4)
    np.testing.assert_array_equal(got[:, 0], images)
    got_labels = read_idx_labels(write_idx(tmp_path / "lab", IDX_LABELS_MAGIC, labels, compress))
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_labels, labels)


def test_idx_wrong_magic(tmp_path):
    labels = write_idx(tmp_path / "labels.gz", IDX_LABELS_MAGIC, np.zeros(3, np.uint8), True)
    with pytest.raises(SiqError, match="labels.gz.*magic"):
        read_idx_images(labels)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_truncated(tmp_path, compress):
    data = idx_bytes(IDX_IMAGES_MAGIC, np.zeros((4, 3, 3), np.uint8))[:-5]
    path = tmp_path / "short"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(SiqError, match="short.*truncated"):
        read_idx_images(path)


def test_idx_truncated_gzip_stream(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(IDX_IMAGES_MAGIC, np.zeros((50, 9, 9), np.uint8)))[:-12])
    with pytest.raises(SiqError, match="cut.gz"):
        read_idx_images(path)


def make_mnist_dir(directory, spelling, compress, n_train=12, n_test=5):
    rng = np.random.default_rng(1)
    directory.mkdir()
    suffix = ".gz" if compress else ""
    parts = {"train": n_train, "t10k": n_test}
    for prefix, n in parts.items():
        img_name = f"{prefix}-images-idx3-ubyte" if spelling == "dash" else f"{prefix}-images.idx3-ubyte"
        lab_name = f"{prefix}-labels-idx1-ubyte" if spelling == "dash" else f"{prefix}-labels.idx1-ubyte"
        write_idx(directory / (img_name + suffix), IDX_IMAGES_MAGIC,
                  rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), compress)
        write_idx(directory / (lab_name + suffix), IDX_LABELS_MAGIC, np.arange(n) % 10, compress)
    return directory


@pytest.mark.parametrize("spelling,compress", [("dash", True), ("dash", False), ("dot", False), ("dot", True)])
def test_mnist_from_data_dir(tmp_path, spelling, compress):
    directory = make_mnist_dir(tmp_path / "mnist", spelling, compress)
    d = load_dataset("mnist", data_dir=str(directory))
    assert d.train_x.shape == (12, 1, 28, 28) and d.test_x.shape == (5, 1, 28, 28)
    assert d.test_y.tolist() == [0, 1, 2, 3, 4]
    assert d.class_names == [str(i) for i in range(10)]
    json.dumps(d.info)


def test_mnist_needs_data_dir(tmp_path):
    with pytest.raises(SiqError, match="--data-dir"):
        load_dataset("mnist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SiqError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", data_dir=str(tmp_path / "empty"))


def test_mnist_label_count_mismatch(tmp_path):
    directory = make_mnist_dir(tmp_path / "mnist", "dash", True)
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", IDX_LABELS_MAGIC, np.zeros(4, np.uint8), True)
    with pytest.raises(SiqError, match="5 images but .* 4 labels"):
        load_dataset("mnist", data_dir=str(directory))


# --- digits, unknown specs ---------------------------------------------------------------------------

def test_digits():
    d = load_dataset("digits", seed=3)
    assert d.image_shape == (1, 8, 8) and d.train_x.dtype == np.uint8
    assert len(d.train_y) + len(d.test_y) == 1797 and len(d.test_y) == 360
    assert d.train_x.max() == 255 and d.train_x.min() == 0
    assert set(np.unique(d.train_x).tolist()) <= {min(255, 16 * v) for v in range(17)}
    assert set(d.test_y.tolist()) == set(range(10))
    np.testing.assert_array_equal(d.test_x, load_dataset("digits", seed=3).test_x)


def test_unknown_spec_lists_known_datasets():
    with pytest.raises(SiqError) as err:
        load_dataset("cifar10")
    for name in DATASETS:
        assert name in str(err.value)
    with pytest.raises(SiqError, match="folder:PATH"):
        load_dataset("folder:")


# --- image folders -----------------------------------------------------------------------------------

SIZES = [(40, 32), (32, 50), (64, 64), (45, 30), (80, 40), (33, 33)]  # (width, height)


def expected_crops(width: int, height: int) -> int:
    short, long = min(width, height), max(width, height)
    return max(32, (long * 32 + short // 2) // short) - 32 + 1


def make_folder(root, classes=("cat", "dog", "mug"), per_class=6):
    rng = np.random.default_rng(7)
    sizes = {}
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            w, h = SIZES[i % len(SIZES)]
            if i == 0:  # one color image per class
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels, "RGB").save(root / name / f"img{i}.jpg", quality=95)
                sizes[f"{name}/img{i}.jpg"] = (w, h)
            else:
                pixels = np.full((h, w), 40 * c + i, dtype=np.uint8)
                Image.fromarray(pixels, "L").save(root / name / f"img{i}.png")
                sizes[f"{name}/img{i}.png"] = (w, h)
    return sizes


def test_image_crops_geometry(tmp_path):
    for w, h in [(40, 32), (32, 40), (32, 50), (64, 64), (20, 10), (100, 37)]:
        path = tmp_path / f"{w}x{h}.png"
        Image.new("RGB", (w, h), (200, 10, 10)).save(path)
        crops = image_crops(path)
        assert crops.dtype == np.uint8 and crops.shape == (expected_crops(w, h), 1, 32, 32), (w, h)
    assert expected_crops(40, 32) == 9 and expected_crops(32, 50) == 19 and expected_crops(64, 64) == 1


def test_image_crops_shift_by_one_pixel(tmp_path):
    ramp = np.tile(np.arange(40, dtype=np.uint8) * 6, (32, 1))  # 32 high, 40 wide: no resize needed
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp, "L").save(path)
    crops = image_crops(path)
    assert len(crops) == 9
    for i, crop in enumerate(crops):
        np.testing.assert_array_equal(crop[0], ramp[:, i:i + 32])


def test_folder_dataset(tmp_path):
    sizes = make_folder(tmp_path / "data")
    (tmp_path / "data" / "cat" / ".DS_Store").write_bytes(b"\0\1junk")
    (tmp_path / "data" / "dog" / "notes.txt").write_text("not an image")
    d = load_dataset(f"folder:{tmp_path / 'data'}", seed=0)
    assert d.class_names == ["cat", "dog", "mug"] and d.num_classes == 3
    assert d.image_shape == (1, 32, 32) and d.train_x.dtype == np.uint8
    info = d.info
    json.dumps(info)
    assert info["skipped_files"] == ["dog/notes.txt"]
    assert len(info["train_files"]) + len(info["test_files"]) == 18
    assert not set(info["train_files"]) & set(info["test_files"])
    # Every class has images on both sides of the split.
    for files in (info["train_files"], info["test_files"]):
        assert {f.split("/")[0] for f in files} == {"cat", "dog", "mug"}
    # Crop counts: (longer side after resize) - 32 + 1 per image.
    assert len(d.train_x) == sum(expected_crops(*sizes[f]) for f in info["train_files"])
    assert len(d.test_x) == sum(expected_crops(*sizes[f]) for f in info["test_files"])
    # test_groups number the test images in info["test_files"] order; labels follow the folder.
    assert d.test_groups.dtype == np.int64 and len(d.test_groups) == len(d.test_y)
    assert np.unique(d.test_groups).tolist() == list(range(len(info["test_files"])))
    for g, f in enumerate(info["test_files"]):
        mask = d.test_groups == g
        assert mask.sum() == expected_crops(*sizes[f])
        assert set(d.test_y[mask].tolist()) == {d.class_names.index(f.split("/")[0])}
    # Deterministic for a seed.
    again = load_dataset(f"folder:{tmp_path / 'data'}", seed=0)
    np.testing.assert_array_equal(d.train_x, again.train_x)
    np.testing.assert_array_equal(d.test_groups, again.test_groups)
    assert again.info["test_files"] == info["test_files"]


def test_folder_different_seed_changes_image_split(tmp_path):
    make_folder(tmp_path / "data", per_class=10)
    splits = {tuple(load_dataset(f"folder:{tmp_path / 'data'}", seed=s).info["test_files"]) for s in range(4)}
    assert len(splits) > 1


def test_folder_tiny_classes_fall_back_to_per_class_split(tmp_path):
    root = tmp_path / "data"
    for name, n in [("a", 1), ("b", 2), ("c", 3)]:
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("L", (32, 40), 30 * i).save(root / name / f"{i}.png")
    d = load_dataset(f"folder:{root}", seed=0)
    assert {f.split("/")[0] for f in d.info["train_files"]} == {"a", "b", "c"}
    assert len(d.info["test_files"]) >= 1 and len(d.test_x) > 0


def test_folder_errors(tmp_path):
    with pytest.raises(SiqError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SiqError, match="empty"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    make_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(SiqError, match="at least 2"):
        load_dataset(f"folder:{tmp_path / 'one'}")
    make_folder(tmp_path / "noimg", classes=("a", "b"))
    (tmp_path / "noimg" / "c").mkdir()
    (tmp_path / "noimg" / "c" / "readme.txt").write_text("hi")
    with pytest.raises(SiqError, match="c has no images"):
        load_dataset(f"folder:{tmp_path / 'noimg'}")
    root = tmp_path / "single"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.new("L", (32, 32)).save(root / name / "x.png")
    with pytest.raises(SiqError, match="too few"):
        load_dataset(f"folder:{root}")


def test_folder_corrupt_image_is_named(tmp_path):
    make_folder(tmp_path / "data")
    (tmp_path / "data" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(SiqError, match="broken.png"):
        load_dataset(f"folder:{tmp_path / 'data'}")


# --- split_validation, padded ------------------------------------------------------------------------

def test_split_validation(mnist5k):
    train, val = mnist5k.split_validation(0.1, seed=0)
    assert len(train.train_y) == 3600 and len(val.test_y) == 400
    assert np.bincount(val.test_y, minlength=10).tolist() == [40] * 10
    # The held-out part comes from the training data only, disjoint from what is kept.
    kept = {bytes(x) for x in train.train_x.reshape(len(train.train_x), -1)}
    held = {bytes(x) for x in val.test_x.reshape(len(val.test_x), -1)}
    source = {bytes(x) for x in mnist5k.train_x.reshape(4000, -1)}
    assert held <= source and kept <= source and not kept & held
    # The real test split is in neither dataset.
    np.testing.assert_array_equal(train.test_x, val.test_x)
    assert val.num_classes == 10 and val.image_shape == (1, 28, 28)
    json.dumps(val.info)
    again, _ = mnist5k.split_validation(0.1, seed=0)
    np.testing.assert_array_equal(again.train_x, train.train_x)
    other, _ = mnist5k.split_validation(0.1, seed=1)
    assert not np.array_equal(other.train_y, train.train_y)
    with pytest.raises(SiqError):
        mnist5k.split_validation(1.0, seed=0)


def test_split_validation_folder_splits_by_image(tmp_path):
    make_folder(tmp_path / "data", per_class=10)
    d = load_dataset(f"folder:{tmp_path / 'data'}", seed=0)
    train, val = d.split_validation(0.25, seed=0)
    assert not set(val.info["train_files"]) & set(val.info["test_files"])
    assert set(val.info["train_files"]) | set(val.info["test_files"]) == set(d.info["train_files"])
    assert val.test_groups is not None and val.test_groups.max() + 1 == len(val.info["test_files"])
    assert len(train.train_x) + len(val.test_x) == len(d.train_x)
    assert set(val.test_y.tolist()) == {0, 1, 2}


def test_padded(mnist5k):
    p = mnist5k.padded(32, 32)
    assert p.image_shape == (1, 32, 32) and p.test_x.shape == (1000, 1, 32, 32)
    np.testing.assert_array_equal(p.train_x[:, :, 2:30, 2:30], mnist5k.train_x)
    assert not p.train_x[:, :, :2].any() and not p.train_x[:, :, 30:].any()
    assert not p.train_x[:, :, :, :2].any() and not p.train_x[:, :, :, 30:].any()
    np.testing.assert_array_equal(p.test_y, mnist5k.test_y)
    odd = mnist5k.padded(29, 31)
    np.testing.assert_array_equal(odd.test_x[:, :, 0:28, 1:29], mnist5k.test_x)
    assert mnist5k.padded(28, 28).image_shape == (1, 28, 28)
    with pytest.raises(SiqError, match="28x28"):
        mnist5k.padded(24, 32)
    with pytest.raises(SiqError):
        mnist5k.padded(32, 27)


def test_gray_pictures_are_replicated_for_a_three_channel_network(mnist5k):
    rgb = mnist5k.with_channels(3)
    assert rgb.image_shape == (3, 28, 28) and len(rgb.test_x) == 1000
    for c in range(3):  # R = G = B = the gray picture
        np.testing.assert_array_equal(rgb.train_x[:, c], mnist5k.train_x[:, 0])
        np.testing.assert_array_equal(rgb.test_x[:, c], mnist5k.test_x[:, 0])
    np.testing.assert_array_equal(rgb.train_y, mnist5k.train_y)
    assert rgb.info["channels_replicated"] == [1, 3]
    assert mnist5k.with_channels(1) is mnist5k
    # the derived datasets stay gray pictures, so the rule applies after a subset, a split or padding too
    derived = mnist5k.subset(100, 50, seed=0).split_validation(0.2, seed=0)[0].padded(32, 32)
    assert derived.with_channels(3).image_shape == (3, 32, 32)
    with pytest.raises(SiqError, match="takes 2 input channel"):
        mnist5k.with_channels(2)
    with pytest.raises(SiqError, match="has 3"):
        rgb.with_channels(1)  # colour is never turned gray here


def test_one_channel_arrays_are_not_replicated(tmp_path):
    """npz: arrays are the user's own channels (a feature map or a signal), so a 3-channel network refuses them."""
    x = np.zeros((20, 8, 8), np.uint8)
    np.savez(tmp_path / "maps.npz", x=x, y=np.arange(20) % 2)
    maps = load_dataset(f"npz:{tmp_path / 'maps.npz'}")
    assert maps.image_shape == (1, 8, 8) and not maps.gray_images
    with pytest.raises(SiqError, match=r"has 1 \(arrays\)"):
        maps.with_channels(3)


def test_fashion_reaches_resnet8_as_32x32_rgb():
    """The sweep's data preparation (as every study sees it) and the pipeline's agree: Fashion-MNIST's 28x28 gray
    pictures are padded to 32x32 and replicated to three channels for resnet8."""
    from siq.codegen.pipeline import fit_arch_to_data
    from siq.training.arch import PRESETS
    from siq.training.experiments.sweep import prepare_data

    fashion = load_dataset("fashion").subset(200, 100, seed=0)
    ds, arch, _ = prepare_data(fashion, "resnet8")
    assert arch.input == (3, 32, 32) and ds.image_shape == (3, 32, 32) and arch.num_classes == 10
    for c in range(3):
        np.testing.assert_array_equal(ds.test_x[:, c, 2:30, 2:30], fashion.test_x[:, 0])
    assert not ds.test_x[:, :, :2].any() and not ds.test_x[:, :, :, 30:].any()
    _, same = fit_arch_to_data(PRESETS["resnet8"], fashion)
    np.testing.assert_array_equal(same.train_x, ds.train_x)
    one, arch28, _ = prepare_data(fashion, "ds-cnn-28")
    assert one.image_shape == arch28.input == (1, 28, 28)


def test_dataset_checks_its_invariants():
    x = np.zeros((2, 1, 4, 4), np.uint8)
    y = np.zeros(2, np.int64)
    with pytest.raises(ValueError):
        Dataset("bad", x.astype(np.float32), y, x, y, ["a"])
    with pytest.raises(ValueError):
        Dataset("bad", x, y + 1, x, y, ["a"])
    Dataset("ok", x, y, x, y, ["a"])


def test_subset_is_stratified_seeded_and_checked(mnist5k):
    small = mnist5k.subset(500, 200, seed=3)
    assert (len(small.train_x), len(small.test_x)) == (500, 200)
    assert np.bincount(small.train_y, minlength=10).min() >= 45  # stratified: ~50 per class
    again = mnist5k.subset(500, 200, seed=3)
    assert np.array_equal(small.train_x, again.train_x) and np.array_equal(small.test_y, again.test_y)
    assert not np.array_equal(small.train_x, mnist5k.subset(500, 200, seed=4).train_x)
    whole = mnist5k.subset(None, None, seed=0)
    assert np.array_equal(whole.train_x, mnist5k.train_x)
    with pytest.raises(SiqError, match="asked for"):
        mnist5k.subset(10**6, None, seed=0)
    with pytest.raises(SiqError, match="one sample per class"):
        mnist5k.subset(5, None, seed=0)
