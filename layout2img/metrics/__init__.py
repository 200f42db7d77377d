"""Evaluation metrics: functions and metric classes (``update(...)`` per batch, ``compute()`` at the end).

* :mod:`.fid` - FID, KID (and IS where the network has logits) over the standard FID Inception;
  :class:`~.fid.FrechetInceptionDistance`, :class:`~.fid.KernelInceptionDistance`
* :mod:`.accuracy` - object accuracy (CAS) of an object classifier: :class:`~.accuracy.ObjectAccuracy`
* :mod:`.layout` - box IoU, R@0.3 / R@0.5, relation satisfaction, mask IoU: :class:`~.layout.LayoutMetrics`
* :mod:`.layout_realism` - sampled layouts against real ones: :class:`~.layout_realism.LayoutRealism`
* :mod:`.diversity` - LPIPS (:class:`~.diversity.LpipsDiversity`) or Inception-feature distance
  between samples of one layout
* :mod:`.clip_score` - CLIP score with any encoder that has ``encode_text`` / ``encode_image``
* :mod:`.retrieval` - a CLIP's caption retrieval top-k and zero-shot object naming

Metrics sit below the commands and beside training: they never import :mod:`layout2img.evaluation`
(the ``evaluate`` engine that uses them) nor :mod:`layout2img.commands`. Each module loads on
first use.
"""
