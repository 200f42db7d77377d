"""The text stage of the pipeline: a model's frozen text encoder, the batch's encoded texts, the
checks of given embeddings, and the text style prior's distribution per object."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..data.batch import Batch
from ..errors import ConfigError, DataError
from .outputs import TextInputs
from .text import SharedTextEncoder, caption_phrase

if TYPE_CHECKING:
    from ..models.text import TextEncoder
    from ..models.text_prior import TextStylePrior
    from ..vocab import Vocab


def _present(text: Any) -> bool:
    return isinstance(text, str) and bool(text.strip())


class TextConditioner:
    """What :class:`~layout2img.pipeline.SceneGraphToImage` does with text, held by the model.

    A plain object beside the model's modules: ``style_prior`` is the model's registered
    :class:`TextStylePrior` (or None), and the encoder sits in a :class:`SharedTextEncoder`, so
    neither adds to the model's ``parameters()`` twice and an EMA copy shares the one encoder.
    """

    def __init__(self, vocab: "Vocab", text_dim: int, style_prior: "TextStylePrior | None" = None):
        self.vocab, self.text_dim, self.style_prior = vocab, text_dim, style_prior
        self.shared_encoder: SharedTextEncoder | None = None

    def encoder_on(self, device: torch.device) -> "TextEncoder | None":
        """The frozen text encoder on ``device`` (moved there on first use), or None."""
        return self.shared_encoder.on(device) if self.shared_encoder is not None else None

    def set_encoder(self, encoder: "TextEncoder | None") -> None:
        """Use ``encoder`` (frozen here; its ``embed_dim`` must be ``text_dim``) or none."""
        from ..models.text import TextEncoder

        if encoder is None:
            self.shared_encoder = None
            return
        if not isinstance(encoder, TextEncoder):
            raise ConfigError(f"text_encoder: expected a TextEncoder or None, got {type(encoder).__name__}")
        if encoder.embed_dim != self.text_dim:
            raise ConfigError(f"text_encoder: embeds in {encoder.embed_dim} dimensions, the model's text_dim is "
                              f"{self.text_dim}")
        self.shared_encoder = SharedTextEncoder(encoder.freeze())

    def encode(self, batch: Batch, device: torch.device, drop_prob: float = 0.0,
               generator: torch.Generator | None = None, captions: Sequence[str | None] | None = None,
               ground_captions: bool = True, cache: bool = True) -> TextInputs:
        """Caption and description embeddings of a batch, on ``device``.

        ``captions`` replaces ``batch.captions`` (one per image, None for none). ``drop_prob``: each
        caption and description is dropped (as if absent) with this probability - text dropout in
        training, so the model also works without text; the draws are one
        ``torch.rand(B + O, generator=generator)`` whatever the batch holds, so a seeded generator
        gives the same drops on every run. ``ground_captions``: an object without a (kept)
        description whose vocabulary name its image's (kept) caption mentions gets the caption's
        phrase for it ("a large black star to the left of a white square" gives the star "a large
        black star"; :func:`caption_phrase`), so a caption reaches the objects it talks about, not
        only FiLM. ``cache``: as :meth:`TextEncoder.encode_text`.
        """
        encoder = self.encoder_on(device)
        if encoder is None:
            raise ConfigError(f"encode_texts: this model has no text encoder (text_dim={self.text_dim}); "
                              "set model.text_encoder")
        captions = list(batch.captions if captions is None else captions)
        b, o = batch.num_images, batch.objs.shape[0]
        if len(captions) != b:
            raise DataError(f"captions: expected one per image ({b}), got {len(captions)}")
        descriptions = list(batch.descriptions)
        if len(descriptions) != o:
            raise DataError(f"batch.descriptions: expected one per object ({o}), got {len(descriptions)}")
        keep = [_present(t) for t in captions + descriptions]
        if drop_prob > 0:
            rng_device = generator.device if generator is not None else "cpu"
            draws = torch.rand(b + o, generator=generator, device=rng_device).cpu().tolist()
            keep = [k and r >= drop_prob for k, r in zip(keep, draws)]
        if ground_captions:
            names = self.vocab.object_names
            for j, img in enumerate(batch.obj_to_img.tolist()):
                if keep[b + j] or not keep[img] or int(batch.objs[j]) == 0:
                    continue
                phrase = caption_phrase(captions[img], names[int(batch.objs[j])])
                if phrase is not None:
                    descriptions[j], keep[b + j] = phrase, True
        texts = [" ".join(t.split()) for t, k in zip(captions + descriptions, keep) if k]
        emb = torch.zeros(b + o, self.text_dim, device=device)
        if texts:
            rows = torch.tensor([i for i, k in enumerate(keep) if k], dtype=torch.long, device=device)
            encoded = encoder.encode_text(texts, cache=cache)
            emb = emb.index_copy(0, rows, encoded.to(device=device, dtype=emb.dtype))
        mask = torch.tensor(keep, dtype=torch.bool, device=device)
        return TextInputs(emb[:b], mask[:b], emb[b:], mask[b:])

    def check_inputs(self, batch: Batch, text_emb, text_mask, obj_text_emb, obj_text_mask):
        """The four text inputs of ``forward``, checked; masks with no True row drop their embeddings."""
        b, o = batch.num_images, batch.objs.shape[0]
        if (text_emb is not None or obj_text_emb is not None) and self.text_dim == 0:
            raise ConfigError("text embeddings given, but this model takes no text (text_dim=0)")
        for name, emb, rows in (("text_emb", text_emb, b), ("obj_text_emb", obj_text_emb, o)):
            if emb is not None and (not isinstance(emb, torch.Tensor) or tuple(emb.shape) != (rows, self.text_dim)):
                shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
                raise DataError(f"{name}: expected shape ({rows}, {self.text_dim}), got {shape}")
        for name, mask, emb, rows in (("text_mask", text_mask, text_emb, b),
                                      ("obj_text_mask", obj_text_mask, obj_text_emb, o)):
            if mask is None:
                continue
            if emb is None:
                raise DataError(f"{name} given without {name.replace('mask', 'emb')}")
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (rows,):
                shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise DataError(f"{name}: expected shape ({rows},), got {shape}")
        device = batch.objs.device
        if text_mask is not None:
            text_mask = text_mask.to(device=device, dtype=torch.bool)
            if not bool(text_mask.any()):
                text_emb = text_mask = None  # no image has a caption: exactly the text-free model
        if obj_text_mask is not None:
            obj_text_mask = obj_text_mask.to(device=device, dtype=torch.bool)
            if not bool(obj_text_mask.any()):
                obj_text_emb = obj_text_mask = None
        return text_emb, text_mask, obj_text_emb, obj_text_mask

    def prior(self, batch: Batch, obj_vecs, text_emb, text_mask, obj_text_emb, obj_text_mask):
        """``(mu, logvar, mask)`` of the text style prior per object: the objects with text (a
        caption on their image or a description) follow it; None three times without a prior or
        text."""
        if self.style_prior is None or (text_emb is None and obj_text_emb is None):
            return None, None, None
        o, device = batch.objs.shape[0], obj_vecs.device
        zeros = obj_vecs.new_zeros(o, self.text_dim, dtype=torch.float32)
        no = torch.zeros(o, dtype=torch.bool, device=device)
        if text_emb is not None:
            cap = text_emb.float()[batch.obj_to_img]
            cap_mask = (text_mask[batch.obj_to_img] if text_mask is not None
                        else torch.ones(o, dtype=torch.bool, device=device))
        else:
            cap, cap_mask = zeros, no
        if obj_text_emb is not None:
            desc = obj_text_emb.float()
            desc_mask = obj_text_mask if obj_text_mask is not None else torch.ones(o, dtype=torch.bool, device=device)
        else:
            desc, desc_mask = zeros, no
        # the prior steers appearance only: the layout's training is left to its own losses
        mu, logvar = self.style_prior(batch.objs, obj_vecs.detach(), cap, cap_mask, desc, desc_mask)
        return mu, logvar, (cap_mask | desc_mask) & (batch.objs != 0)
