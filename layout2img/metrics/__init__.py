"""Evaluation metrics (imported by :mod:`layout2img.evaluation`; each module loads on first use).

* :mod:`.fid` - FID, KID (and IS where the network has logits) over the standard FID Inception
* :mod:`.accuracy` - the object classifier and object accuracy (CAS)
* :mod:`.layout` - box IoU, R@0.3 / R@0.5, relation satisfaction, mask IoU
* :mod:`.diversity` - LPIPS or Inception-feature distance between samples of one layout
* :mod:`.clip_score` - CLIP score with any encoder that has ``encode_text`` / ``encode_image``
* :mod:`.commands` - the ``evaluate``, ``fid`` and ``train-classifier`` subcommands
"""
