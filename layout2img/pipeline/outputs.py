"""What the pipeline returns: :class:`ModelOutput` (one forward pass) and :class:`TextInputs` (encoded texts)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.layout_input import LayoutTensors
from ..models.layout_sampler import LayoutSample


@dataclass
class ModelOutput:
    """What :meth:`SceneGraphToImage.forward` returns (per object rows follow ``batch.objs``)."""

    images: torch.Tensor  # (B, 3, H, W) in [-1, 1] (H/2**n_local_enhancers for stage='global')
    boxes_pred: torch.Tensor  # (O, 4) predicted boxes
    mask_logits: torch.Tensor  # (O, M, M) predicted mask logits
    boxes: torch.Tensor  # (O, 4) the boxes the layout was built from
    masks: torch.Tensor  # (O, M, M) the mask probabilities the layout was built from
    layout: LayoutTensors
    style_mu: torch.Tensor | None  # (O, S) encoder outputs ('encode' only)
    style_logvar: torch.Tensor | None
    style_codes: torch.Tensor | None  # (O, S) the codes spread into the style map
    obj_vecs: torch.Tensor  # (O, width) graph-convolved object vectors
    prior_mu: torch.Tensor | None = None  # (O, S) the text style prior (objects with text; else None)
    prior_logvar: torch.Tensor | None = None
    prior_mask: torch.Tensor | None = None  # (O,) bool: objects whose code follows the text prior
    layout_sample: LayoutSample | None = None  # the layout sampler's draw (its posterior pass in training)

    def visible_weights(self) -> torch.Tensor:
        """(O, H, W) each object's *visible* share of each pixel as the generator got it (what is
        painted over it removed, holes and gaps between stuff filled): for layout pictures, where
        the raw masks would draw grass over the things standing on it and leave the gap between
        two stuff boxes blank."""
        return self.layout.geometry.weights.float().clamp(0, 1)


@dataclass
class TextInputs:
    """Encoded captions and descriptions of a batch (what :meth:`SceneGraphToImage.forward` takes).

    Rows without text are zero vectors with a False mask: FiLM leaves those images alone and the
    graph encoder keeps those objects' category embeddings.
    """

    text_emb: torch.Tensor  # (B, D) caption embeddings, zeros where none
    text_mask: torch.Tensor  # (B,) bool
    obj_text_emb: torch.Tensor  # (O, D) description embeddings, zeros where none
    obj_text_mask: torch.Tensor  # (O,) bool

    def as_kwargs(self) -> dict[str, torch.Tensor]:
        return {"text_emb": self.text_emb, "text_mask": self.text_mask, "obj_text_emb": self.obj_text_emb,
                "obj_text_mask": self.obj_text_mask}
