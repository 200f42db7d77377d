"""What a run shows while it trains: TensorBoard scalars, sample grids, one-line messages.

Sample grids have one column per fixed validation scene and four rows: the real image with its
ground-truth boxes; the model's image from the ground-truth layout; its image from the scene
graph alone (predicted layout, predicted boxes drawn), with the real image's object styles; and
the same with new styles: drawn from the per-class style clusters once they are fitted (the end
of a run with ``train.fit_styles``), before that from N(0, I).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from ..data.batch import Batch, collate
from ..errors import WriteError
from ..io import atomic_save
from ..pipeline.inputs import resolve_style_source
from ..visualize import draw_layout, make_grid_image
from ..vocab import Vocab
from .checkpoint import latest_note

NUM_SAMPLE_SCENES = 8
ROW_TITLES = ("real, GT boxes", "from GT layout", "from graph", "graph, new styles")
CLUSTER_ROW_TITLE = "graph, cluster styles"


class RunLogger:
    def __init__(self, out_dir: Path, enabled: bool, vocab: Vocab):
        self.out_dir, self.enabled, self.vocab = Path(out_dir), enabled, vocab
        self._writer = None
        self._fixed: Batch | None = None

    @property
    def writer(self) -> SummaryWriter:
        if self._writer is None:
            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        return self._writer

    def info(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def _fixed_batch(self, val_set, fallback: Batch) -> Batch:
        if self._fixed is None:
            if val_set is not None and len(val_set) > 0:
                n = min(NUM_SAMPLE_SCENES, len(val_set))
                self._fixed = collate([val_set[i] for i in range(n)])
            else:
                keep = list(range(min(NUM_SAMPLE_SCENES, fallback.num_images)))
                self._fixed = fallback.to("cpu").select(keep)
        return self._fixed

    @torch.no_grad()
    def samples(self, step: int, model, train_batch: Batch, train_out, val_set) -> Path | None:
        """Render the fixed scenes with ``model`` (the EMA), save a PNG and log it."""
        if not self.enabled:
            return None
        device = next(model.parameters()).device
        batch = self._fixed_batch(val_set, train_batch).to(device)
        g = torch.Generator().manual_seed(1234)  # same noise every time: progress is comparable
        was_training = model.training
        model.eval()
        try:
            gt = model(batch, layout_source="gt", style_source="encode", generator=g)
            g.manual_seed(1234)
            refine = model.refines_by_default  # the layouts `generate` would draw
            pred = model(batch, layout_source="pred", style_source="encode", generator=g, keep_known_boxes=False,
                         refine=refine)
            g.manual_seed(1234)
            style_source = resolve_style_source(model, "auto")
            sampled = model(batch, layout_source="pred", style_source=style_source,
                            generator=g, keep_known_boxes=False, refine=refine)
        finally:
            model.train(was_training)
        rows = [[], [], [], []]
        for i in range(batch.num_images):
            idx = batch.objects_of(i)
            idx = idx[batch.objs[idx] != 0]
            labels = [self.vocab.object_names[o] for o in batch.objs[idx].tolist()]
            rows[0].append(draw_layout(batch.images[i].float().cpu(), batch.boxes[idx].cpu(), labels))
            rows[1].append(draw_layout(gt.images[i].float().cpu()))
            rows[2].append(draw_layout(pred.images[i].float().cpu(), pred.boxes[idx].float().cpu(), labels))
            rows[3].append(draw_layout(sampled.images[i].float().cpu()))
        titles = ROW_TITLES[:3] + (CLUSTER_ROW_TITLE if style_source == "cluster" else ROW_TITLES[3],)
        grid = make_grid_image(rows, row_titles=titles)
        path = self.out_dir / "samples" / f"step_{step:06d}.png"
        try:
            atomic_save(path, lambda p: grid.save(p, format="PNG"))
            atomic_save(self.out_dir / "samples.png", lambda p: grid.save(p, format="PNG"))
        except WriteError as e:  # disk full: say what the run can still resume from
            raise e.with_note(latest_note(self.out_dir / "checkpoints")) from None
        import numpy as np

        self.writer.add_image("samples", np.asarray(grid), step, dataformats="HWC")
        return path

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

