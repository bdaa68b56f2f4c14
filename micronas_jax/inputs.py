"""Input batches for the proxies: real images from a local path, or synthetic ones.

Nothing is downloaded. Formats:

* CIFAR-10: the Python pickle batches (``data_batch_1`` .. ``data_batch_5``), in ``root`` or
  ``root/cifar-10-batches-py``;
* CIFAR-100: the pickle ``train`` file, in ``root`` or ``root/cifar-100-python``;
* ImageNet16-120: NB201's ``train_data_batch_1`` .. ``_10`` pickles (``data`` uint8[N, 768],
  labels 1..1000, of which the first 120 classes are kept), in ``root``.

Images are scaled to [0, 1] and normalised with NB201's per-dataset mean and std, as NB201 and
TE-NAS do. Without a path, batches are synthetic, every pixel N(0, 1) like a normalised image:

* 'gaussian' (the default): i.i.d. N(0, 1) pixels (white noise), what TE-NAS-style synthetic
  runs feed, and what every committed figure was measured on unless it says otherwise;
* 'natural': Gaussian random fields with the power spectrum of natural images, power ~ 1/|f|^2
  (Field 1987; van der Schaaf and van Hateren 1996), so neighbouring pixels are correlated as in
  a photograph, with correlated colour channels. The proxies rank cells better on these (see the
  README), and operators that only smooth (average pooling) no longer look like they add
  information; the latency-guided searches' trade-off did not improve, so it is not the default.

Batches are NHWC float32, drawn with an explicit PRNG key.
"""

from __future__ import annotations

import dataclasses
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from cells import ops as ops_lib

MEAN_STD = {
    "cifar10": ([125.3, 123.0, 113.9], [63.0, 62.1, 66.7]),
    "cifar100": ([129.3, 124.1, 112.4], [68.2, 65.4, 70.4]),
    "ImageNet16-120": ([122.68, 116.66, 104.01], [63.22, 61.26, 65.09]),
}
RESOLUTION = {"cifar10": 32, "cifar100": 32, "ImageNet16-120": 16}
SYNTHETIC = ("gaussian", "natural")
NATURAL_EXPONENT = 2.0  # natural images' power spectrum falls as 1/|f|^2
# Correlation of the R, G, B fields: photographs' colour channels move together. Assumed values
# typical of natural images (not measured on CIFAR here, which cannot be downloaded).
NATURAL_RGB_CORRELATION = np.array([[1.0, 0.92, 0.82], [0.92, 1.0, 0.93], [0.82, 0.93, 1.0]])


def natural_noise(key: jax.Array, shape: tuple[int, ...], exponent: float = NATURAL_EXPONENT) -> jax.Array:
    """float32[B, H, W, C]: Gaussian random fields with power spectral density ~ 1/|f|^exponent.

    Every (sample, channel) is white noise filtered in the Fourier domain by |f|^(-exponent / 2)
    (|f| in cycles per pixel; the zero frequency gets the lowest non-zero one's gain, so each
    image has a finite random mean), then scaled so that every pixel is exactly N(0, 1): the
    filter's mean squared gain is the field's variance. With C = 3 the channels are mixed to
    ``NATURAL_RGB_CORRELATION`` (a Cholesky factor, which keeps unit variances); otherwise they are
    independent. The field is periodic and stationary, so every crop of it has the same
    distribution.
    """
    _, h, w, c = shape
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    gain = np.maximum(f, 1.0 / max(h, w)) ** (-exponent / 2)
    gain = (gain / np.sqrt(np.mean(gain ** 2)))[None, :, :, None]
    white = jax.random.normal(key, shape, jnp.float32)
    # gain is even in f, so the filtered field is real up to rounding.
    x = jnp.real(jnp.fft.ifft2(jnp.fft.fft2(white, axes=(1, 2)) * gain.astype(np.float32), axes=(1, 2)))
    if c == 3:
        # Full float32, as the networks: a GPU's default would round x to TF32, and the inputs
        # (and every NTK score of them) would differ from the CPU's.
        x = jnp.matmul(x, jnp.asarray(np.linalg.cholesky(NATURAL_RGB_CORRELATION).T, jnp.float32),
                       precision=ops_lib.PRECISION)
    return x


class DataError(ValueError):
    """A dataset file that is missing, unreadable or of the wrong shape."""


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """Where batches come from.

    Attributes:
      dataset: 'cifar10', 'cifar100' or 'ImageNet16-120'.
      images: uint8[N, H, W, 3] training images, or ``None`` for synthetic inputs.
      synthetic_kind: without images, 'gaussian' (white noise) or 'natural' (1/|f|^2 fields).
    """

    dataset: str
    images: np.ndarray | None = None
    synthetic_kind: str = "gaussian"

    def __post_init__(self):
        if self.synthetic_kind not in SYNTHETIC:
            raise ValueError(f"unknown synthetic input kind {self.synthetic_kind!r}; known: {', '.join(SYNTHETIC)}")

    @property
    def synthetic(self) -> bool:
        return self.images is None

    @property
    def resolution(self) -> int:
        return RESOLUTION[self.dataset]

    def describe(self) -> str:
        if self.synthetic and self.synthetic_kind == "natural":
            return f"synthetic 1/f^{NATURAL_EXPONENT:g} (natural-image spectrum) inputs shaped like {self.dataset}"
        if self.synthetic:
            return f"synthetic N(0, 1) inputs shaped like {self.dataset}"
        return f"{len(self.images):,} {self.dataset} training images"

    def batch(self, key: jax.Array, size: int) -> jax.Array:
        """float32[size, H, W, 3]: a normalised batch (random images, without replacement)."""
        r = self.resolution
        if self.synthetic and self.synthetic_kind == "natural":
            return natural_noise(key, (size, r, r, 3))
        if self.synthetic:
            return jax.random.normal(key, (size, r, r, 3), jnp.float32)
        idx = jax.random.choice(key, len(self.images), (size,), replace=False)
        return normalise(self.images[np.asarray(idx)], self.dataset)

    def crops(self, key: jax.Array, size: int, crop: int = 3) -> jax.Array:
        """float32[size, crop, crop, 1]: TE-NAS's linear-region inputs, a random ``crop`` x ``crop``
        patch of one random channel of a random normalised image (synthetic: of a fresh field of
        the dataset's resolution; a stationary field's corner patch is a random patch)."""
        if self.synthetic and self.synthetic_kind == "natural":
            return natural_noise(key, (size, self.resolution, self.resolution, 1))[:, :crop, :crop, :]
        if self.synthetic:
            return jax.random.normal(key, (size, crop, crop, 1), jnp.float32)
        k_img, k_y, k_x, k_c = jax.random.split(key, 4)
        n, h, w, c = self.images.shape
        img = np.asarray(jax.random.randint(k_img, (size,), 0, n))
        ys = np.asarray(jax.random.randint(k_y, (size,), 0, h - crop + 1))
        xs = np.asarray(jax.random.randint(k_x, (size,), 0, w - crop + 1))
        ch = np.asarray(jax.random.randint(k_c, (size,), 0, c))
        full = np.asarray(normalise(self.images[img], self.dataset))
        rows = ys[:, None] + np.arange(crop)
        cols = xs[:, None] + np.arange(crop)
        out = full[np.arange(size)[:, None, None], rows[:, :, None], cols[:, None, :], ch[:, None, None]]
        return jnp.asarray(out[..., None], jnp.float32)


def normalise(images: np.ndarray, dataset: str) -> jax.Array:
    """uint8[..., 3] -> float32, scaled to [0, 1] and normalised with NB201's mean and std."""
    mean, std = (np.array(v, np.float32) / 255.0 for v in MEAN_STD[dataset])
    return jnp.asarray((images.astype(np.float32) / 255.0 - mean) / std)


def _unpickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise DataError(f"dataset file not found: {path}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise DataError(f"dataset file {path} is not a readable pickle: {err}") from None


def _find(root: str, subfolder: str, first_file: str) -> str:
    for folder in (root, os.path.join(root, subfolder)):
        if os.path.exists(os.path.join(folder, first_file)):
            return folder
    raise DataError(f"no {first_file} under {root} or {os.path.join(root, subfolder)}")


def _images(batches: list[dict], side: int, path: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = [], []
    for b in batches:
        if "data" not in b:
            raise DataError(f"{path}: a batch has no 'data' entry")
        d = np.asarray(b["data"], np.uint8)
        if d.ndim != 2 or d.shape[1] != 3 * side * side:
            raise DataError(f"{path}: data of shape {d.shape}, expected (N, {3 * side * side})")
        data.append(d)
        labels.append(np.asarray(b.get("labels", b.get("fine_labels"))))
    images = np.concatenate(data).reshape(-1, 3, side, side).transpose(0, 2, 3, 1)
    return images, np.concatenate(labels)


def load_images(dataset: str, path: str | os.PathLike | None, synthetic: str = "gaussian") -> ImageSource:
    """An ``ImageSource`` for ``dataset``: real training images from ``path``, else synthetic
    inputs of the kind ``synthetic`` ('gaussian' or 'natural', see the module docstring).

    Raises:
      DataError: the files are missing, unreadable or malformed (the message names the file).
    """
    if dataset not in RESOLUTION:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(RESOLUTION)}")
    if not path:
        source = ImageSource(dataset, synthetic_kind=synthetic)
        logging.info("No data path given: using %s", source.describe())
        return source
    root = os.fspath(path)
    if dataset == "cifar10":
        folder = _find(root, "cifar-10-batches-py", "data_batch_1")
        files = [os.path.join(folder, f"data_batch_{i}") for i in range(1, 6)]
        images, _ = _images([_unpickle(f) for f in files], 32, folder)
    elif dataset == "cifar100":
        folder = _find(root, "cifar-100-python", "train")
        images, _ = _images([_unpickle(os.path.join(folder, "train"))], 32, folder)
    else:
        folder = _find(root, "", "train_data_batch_1")
        files = [os.path.join(folder, f"train_data_batch_{i}") for i in range(1, 11)]
        images, labels = _images([_unpickle(f) for f in files], 16, folder)
        images = images[(labels >= 1) & (labels <= 120)]  # NB201's ImageNet16-120 subset
    logging.info("Loaded %d %s training images from %s", len(images), dataset, folder)
    return ImageSource(dataset, images)
