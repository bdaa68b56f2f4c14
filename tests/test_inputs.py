"""Input loading: CIFAR / ImageNet16 pickles from a local path, normalisation, synthetic batches."""

import pickle

import jax
import numpy as np
import pytest

from micronas_jax import inputs


def _write_cifar10(folder, n=20):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(1, 6):
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    return folder


def test_cifar10_from_the_standard_folder(tmp_path):
    _write_cifar10(tmp_path / "cifar-10-batches-py")
    source = inputs.load_images("cifar10", tmp_path)
    assert source.images.shape == (100, 32, 32, 3) and not source.synthetic
    batch = source.batch(jax.random.key(0), 8)
    assert batch.shape == (8, 32, 32, 3)
    # Channel-last layout from CIFAR's channel-first rows, then NB201's normalisation.
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes())["data"][0]
    first = raw.reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_allclose(source.images[0], first)
    want = (first / 255.0 - np.array([125.3, 123.0, 113.9]) / 255) / (np.array([63.0, 62.1, 66.7]) / 255)
    np.testing.assert_allclose(inputs.normalise(first[None], "cifar10")[0], want, rtol=1e-5, atol=1e-6)
    crops = source.crops(jax.random.key(1), 50)
    assert crops.shape == (50, 3, 3, 1)


def test_imagenet16_keeps_120_classes(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1, 11):
        batch = {"data": rng.integers(0, 256, (10, 768), dtype=np.uint8),
                 "labels": [1, 50, 120, 121, 500, 2, 3, 4, 999, 7]}
        (tmp_path / f"train_data_batch_{i}").write_bytes(pickle.dumps(batch))
    source = inputs.load_images("ImageNet16-120", tmp_path)
    assert source.images.shape == (70, 16, 16, 3)


@pytest.mark.parametrize("kind", inputs.SYNTHETIC)
def test_synthetic_without_a_path(kind):
    source = inputs.load_images("cifar100", None, synthetic=kind)
    assert source.synthetic and "synthetic" in source.describe()
    a, b = source.batch(jax.random.key(0), 4), source.batch(jax.random.key(0), 4)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 32, 32, 3) and a.dtype == np.float32
    assert not np.array_equal(a, source.batch(jax.random.key(1), 4))
    crops = source.crops(jax.random.key(2), 7)
    assert crops.shape == (7, 3, 3, 1) and crops.dtype == np.float32


def test_natural_noise_has_unit_pixels_and_the_natural_spectrum():
    x = np.asarray(inputs.natural_noise(jax.random.key(0), (512, 32, 32, 3)), np.float64)
    # Every pixel N(0, 1), like a normalised image.
    assert abs(x.mean()) < 0.05 and abs(x.var() - 1) < 0.05
    # Float64 NumPy reference: the mean periodogram falls as 1/|f|^2 (log-log slope -2).
    power = (np.abs(np.fft.fft2(x, axes=(1, 2))) ** 2).mean(axis=(0, 3))
    f = np.sqrt(np.fft.fftfreq(32)[:, None] ** 2 + np.fft.fftfreq(32)[None, :] ** 2)
    nonzero = f > 0
    slope = np.polyfit(np.log(f[nonzero]), np.log(power[nonzero]), 1)[0]
    assert abs(slope + inputs.NATURAL_EXPONENT) < 0.05, slope
    # Neighbouring pixels correlate as in photographs; white noise's do not.
    def neighbour_corr(a):
        return np.corrcoef(a[:, :, :-1].ravel(), a[:, :, 1:].ravel())[0, 1]
    white = np.asarray(inputs.ImageSource("cifar10", synthetic_kind="gaussian").batch(jax.random.key(0), 512))
    assert neighbour_corr(x) > 0.6 and abs(neighbour_corr(white)) < 0.02
    # Colour channels correlate as specified; a one-channel field is just the filtered noise.
    np.testing.assert_allclose(np.corrcoef(x.reshape(-1, 3).T), inputs.NATURAL_RGB_CORRELATION, atol=0.03)
    one = np.asarray(inputs.natural_noise(jax.random.key(0), (512, 32, 32, 1)), np.float64)
    assert abs(one.var() - 1) < 0.05


def test_unknown_synthetic_kind_is_named():
    with pytest.raises(ValueError, match="unknown synthetic input kind 'pink'"):
        inputs.load_images("cifar10", None, synthetic="pink")


def test_bad_data_is_named(tmp_path):
    with pytest.raises(inputs.DataError, match="no data_batch_1 under"):
        inputs.load_images("cifar10", tmp_path)
    folder = _write_cifar10(tmp_path / "c10")
    (folder / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(inputs.DataError, match="data_batch_3 is not a readable pickle"):
        inputs.load_images("cifar10", folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8)}))
    with pytest.raises(inputs.DataError, match=r"expected \(N, 3072\)"):
        inputs.load_images("cifar10", folder)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        inputs.load_images("svhn", None)
