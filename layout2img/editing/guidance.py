"""The CLIP signal of an edit: the guiding encoder, views of the region and their scores against the text."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..errors import ConfigError
from ..models.layout import crop_boxes
from ..models.text import CROP_MARGIN, TextEncoder
from ..pipeline import TRAIN_CLIP_HINT, is_path_spec

#: The CLIP temperature when the encoder has no learned ``logit_scale``.
DEFAULT_LOGIT_SCALE = 100.0


def guidance_encoder(model, clip: TextEncoder | str | Path | None) -> TextEncoder:
    """The CLIP that guides an edit: ``clip`` (an encoder or a spec such as ``runs/clip_shapes``)
    or, when None, the model's own text encoder."""
    if clip is None:
        if model.text_encoder is None:
            raise ConfigError("edit: no CLIP to guide the edit: this model has no text encoder; pass clip=SPEC "
                              "(--clip runs/clip_shapes, the domain CLIP of `layout2img train-clip`)")
        return model.text_encoder
    if isinstance(clip, TextEncoder):
        return clip
    if isinstance(clip, (str, Path)):
        spec = str(clip)
        if is_path_spec(spec) and not Path(spec.partition("=")[2] or spec).expanduser().exists():
            raise ConfigError(f"--clip {spec}: no such CLIP folder or file; for the Shapes domain CLIP, "
                              f"{TRAIN_CLIP_HINT}")
        return TextEncoder.load(spec).freeze()
    raise ConfigError(f"edit: clip must be a TextEncoder, a spec string or None, got {type(clip).__name__}")


class Guidance:
    """How well a region of an image matches the text (and not the negatives), seen by a CLIP.

    The region is looked at through views: its crop box and jittered copies (shifted and scaled
    by up to ``jitter`` of its size, drawn from ``seed``), so an edit cannot win by an
    adversarial pattern that only works for one exact crop.
    """

    def __init__(self, encoder: TextEncoder, text: str, negatives: Sequence[str] = (),
                 crop_box: torch.Tensor | None = None, jitter: float = 0.1, seed: int = 0,
                 device: torch.device | str = "cpu"):
        self.encoder = encoder
        self.device = torch.device(device)
        self.jitter = jitter
        self.text_emb = encoder.encode_text([" ".join(text.split())]).to(device)
        self.negative_emb = encoder.encode_text([" ".join(t.split()) for t in negatives]).to(device) \
            if negatives else None
        scale = getattr(encoder.model, "logit_scale", None)
        self.logit_scale = float(scale.exp()) if isinstance(scale, torch.Tensor) else DEFAULT_LOGIT_SCALE
        self.crop_box = crop_box
        self.view_box = crop_box if crop_box is not None else torch.tensor([0.0, 0.0, 1.0, 1.0], device=device)
        # object crops are framed as the CLIP saw them in training; the whole image as it is
        self.margin = CROP_MARGIN if crop_box is not None else 0.0
        self._jitter_rng = torch.Generator(device="cpu").manual_seed(int(seed))

    def views(self, count: int) -> torch.Tensor:
        """(count, 4) normalised boxes: the crop box, then ``count - 1`` jittered copies
        (each call draws new ones)."""
        boxes = self.view_box[None].repeat(count, 1)
        if count > 1:
            size = (self.view_box[2:] - self.view_box[:2]).repeat(2)
            noise = (torch.rand(count - 1, 4, generator=self._jitter_rng) * 2 - 1).to(self.device) * self.jitter * size
            boxes[1:] = boxes[1:] + noise
            lo = boxes[:, :2].clamp(0, 1)
            hi = torch.maximum(boxes[:, 2:].clamp(0, 1), lo + 1e-3)
            boxes = torch.cat([lo, hi], dim=1)
        return boxes

    def embed_views(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """CLIP image embeddings (len(boxes), D) of the crops of ``image`` (3, H, W) at ``boxes``."""
        crops = crop_boxes(image[None], boxes, torch.zeros(len(boxes), dtype=torch.long, device=self.device),
                           self.encoder.image_size, margin=self.margin)
        return self.encoder.encode_image(crops)

    def similarity(self, image: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of the region's crop (no jitter) with the text."""
        return (self.embed_views(image, self.views(1)) @ self.text_emb[0]).mean()

    def score(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss term, similarity) over the views at ``boxes``: 1 - cos, plus with negatives the
        cross-entropy of the text against them at the CLIP's own temperature."""
        emb = self.embed_views(image, boxes)
        sim = (emb @ self.text_emb[0]).mean()
        if self.negative_emb is None:
            return 1 - sim, sim
        logits = self.logit_scale * emb @ torch.cat([self.text_emb, self.negative_emb]).T
        return 1 - sim - torch.log_softmax(logits, dim=1)[:, 0].mean(), sim
