"""sg2im (Johnson et al., CVPR 2018) at its ``scripts/train.py`` defaults: the baseline of issues 11 and 14.

The same Shapes data, the same CPU budget and the same evaluation protocol as our default run, so
the two can be compared on one machine:

    python benchmarks/sg2im_baseline.py --train                       # 969 CPU-seconds, 1 thread -> runs/sg2im_baseline
    python benchmarks/sg2im_baseline.py --evaluate               # first 1000 val graphs, GT layouts: FID, object acc
    python benchmarks/sg2im_baseline.py --speed --batch 16 --allow-busy   # train img/s on speed.py's synthetic graphs
    python benchmarks/sg2im_baseline.py --dry-run --allow-busy --data DIR --classifier DIR   # all three, tiny: seconds

The model is written here from sg2im's description (no sg2im code is used), at 64x64:

* **graph convolution**: object and predicate embeddings of 128 (the object table has one row more
  than the vocabulary, as sg2im's), 5 ``GraphTripleConv`` layers (128 wide, MLPs through 512,
  average pooling of the subject / object messages; every Linear followed by a ReLU, the last
  included, as sg2im's ``build_mlp``);
* **box net** 128 -> 512 -> 4 (ReLU after both) with an MSE box loss of weight 10, and **mask net**
  (four nearest-upsample + BN + conv3x3 + ReLU blocks to 16x16, conv1x1, sigmoid); the mask loss
  weight is sg2im's default 0, so the mask net is built and run but never trained;
* **layout** from the ground-truth boxes and ground-truth masks (what sg2im trains with on COCO,
  and the ``--layout gt`` protocol of ``layout2img evaluate``): each object's 128-d vector times
  its mask, placed in its box by bilinear ``grid_sample``, summed over the image's objects, then 32
  channels of N(0, 1) layout noise;
* **cascaded refinement network** (1024, 512, 256, 128, 64): starting from zeros at 2x2, each module
  upsamples (nearest) x2, concatenates the layout average-pooled to its size, then conv3x3 - BN -
  LeakyReLU(0.2) - conv3x3 - BN - LeakyReLU(0.2); head conv3x3(64) - LeakyReLU - conv1x1(3), no
  tanh. Images live in sg2im's ImageNet-normalised space (``(x - mean) / std`` of [0, 1] images);
  saved images are mapped back and clipped to [0, 1] (sg2im's ``run_model.py`` also stretches each
  image to its own min-max; that is not done here, so the PNGs hold the colours the model made);
* **discriminators**: a patch discriminator ``C4-64-2,C4-128-2,C4-256-2`` (valid padding, BN and
  LeakyReLU(0.2) before every conv but the first; as in sg2im, its 1x1 classifier is built but the
  256 channels of the last conv are the scores), and an auxiliary-classifier object discriminator
  on 32x32 bilinear crops of every object (``__image__`` included) at its box: the same convs,
  global average pooling, Linear(256, 1024), a real/fake head and a class head;
* **losses** (sg2im's defaults): L1 pixel 1.0, box MSE 10, the object D's classification loss 0.1,
  GAN ('gan': BCE with logits) for G weighted ``discriminator_loss_weight`` 0.01 x ``d_obj_weight`` /
  ``d_img_weight`` 1.0; each discriminator is trained on BCE real/fake (+ both AC losses for the
  object D), fake then real; a step whose G loss is not finite is skipped (no update), as sg2im does;
* **optimisers**: Adam, lr 1e-4, PyTorch's default betas (0.9, 0.999), one per network; G, then
  the object D, then the image D on each batch; batch 8 (what issue 11 ran sg2im at; sg2im's own
  default is 32). No augmentation (sg2im has none). The generator stays in training mode while it
  trains (sg2im switches to eval mode only after 100 000 iterations) and is evaluated in eval mode
  (as sg2im's ``run_model.py``).

Data: ``layout2img``'s Shapes dataset and ``collate`` (packed ``objs, triples, obj_to_img, boxes,
masks``), drawn by the trainer's ``ResumableSampler`` (seed 0). Its items already end with an
``__image__`` object (box [0, 0, 1, 1], an all-ones mask) and an ``__in_image__`` triple from every
object to it, exactly what sg2im's COCO dataset adds, so nothing is added here.

* ``--train``: trains until the process has used ``--cpu-seconds`` of CPU (``time.process_time()``
  since the process started: imports, dataset, model, data loading and steps; default 969, the
  user CPU of our default ``python train.py``) or for ``--steps``; writes ``model.safetensors``
  (the generator), ``config.json`` (architecture, vocabulary, budget, losses) and ``samples.png``
  (val scenes: GT layout, real, sg2im) into ``--out``.
* ``--evaluate``: the first ``--max-images`` val graphs, GT boxes and masks, 1 sample, seed 0; real
  and generated 8-bit PNGs in ``OUT/real`` and ``OUT/fake``; FID (pytorch-fid definition, the
  project's FID Inception) from those files and object accuracy (``--classifier``, crops at the GT
  boxes) on generated and real images; ``OUT/report.json`` with the machine and the protocol.
* ``--speed``: img/s of one whole training step (G and both Ds forward and backward, three Adam
  steps) on ``benchmarks/synthetic.py``'s 6-object graphs, as ``benchmarks/speed.py`` measures our
  model; median (IQR, min-max) over ``--steps`` after ``--warmup``; the quiet-machine guard first.

Every mode prints one markdown row per figure (``timing.FIGURE_HEADER``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from layout2img.errors import CheckpointError, ConfigError, DataError, Layout2ImgError  # noqa: E402

from machine import (add_guard_args, check_quiet, guard_from_args, machine, machine_line,  # noqa: E402
                     save_report, watch_other_processes)
from timing import FIGURE_HEADER, count_flops, figure_row, repeat  # noqa: E402

#: sg2im's ImageNet normalisation of [0, 1] images (its ``imagenet_preprocess``).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The CPU budget of ``--train``: the user CPU-seconds of our default ``python train.py`` (docs/BENCHMARKS.md).
DEFAULT_CPU_SECONDS = 969.0


@dataclass(frozen=True)
class Arch:
    """sg2im's generator and discriminator sizes (``scripts/train.py`` defaults)."""

    embedding_dim: int = 128
    gconv_dim: int = 128
    gconv_hidden_dim: int = 512
    gconv_num_layers: int = 5
    refinement_dims: tuple[int, ...] = (1024, 512, 256, 128, 64)
    layout_noise_dim: int = 32
    mask_size: int = 16
    d_arch: str = "C4-64-2,C4-128-2,C4-256-2"
    crop_size: int = 32
    leak: float = 0.2


@dataclass(frozen=True)
class LossWeights:
    """sg2im's loss weights (``scripts/train.py`` defaults; ``mask_loss_weight`` is 0 there, so absent here)."""

    l1_pixel: float = 1.0
    bbox_pred: float = 10.0
    ac: float = 0.1
    discriminator: float = 0.01
    d_obj: float = 1.0
    d_img: float = 1.0


#: --dry-run: a model small enough for seconds on a 32 px dataset.
TINY = Arch(embedding_dim=16, gconv_dim=16, gconv_hidden_dim=32, gconv_num_layers=2, refinement_dims=(16, 8, 8),
            layout_noise_dim=4, mask_size=8, d_arch="C4-8-2,C4-16-2", crop_size=16)
DRY_RUN = {"steps": 2, "max_images": 4, "eval_batch": 4, "warmup": 1, "batch": 2}


# -- the model ---------------------------------------------------------------------------------------
def _mlp(dims: list[int], kaiming: bool = False) -> nn.Sequential:
    """Linear layers each followed by a ReLU, the last one included (sg2im's ``build_mlp`` defaults)."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        linear = nn.Linear(a, b)
        if kaiming:
            nn.init.kaiming_normal_(linear.weight)
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers)


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, k, padding=k // 2)
    nn.init.kaiming_normal_(conv.weight)
    return conv


class TripleConv(nn.Module):
    """One graph convolution over (subject, predicate, object) triples with average pooling."""

    def __init__(self, din: int, dout: int, hidden: int):
        super().__init__()
        self.hidden, self.dout = hidden, dout
        self.net1 = _mlp([3 * din, hidden, 2 * hidden + dout], kaiming=True)
        self.net2 = _mlp([hidden, hidden, dout], kaiming=True)

    def forward(self, obj: torch.Tensor, pred: torch.Tensor, s: torch.Tensor, o: torch.Tensor):
        h, d = self.hidden, self.dout
        t = self.net1(torch.cat([obj[s], pred, obj[o]], 1))
        pooled = obj.new_zeros(obj.shape[0], h).index_add(0, s, t[:, :h]).index_add(0, o, t[:, h + d:])
        ones = obj.new_ones(s.shape[0])
        count = obj.new_zeros(obj.shape[0]).index_add(0, s, ones).index_add(0, o, ones).clamp(min=1)
        return self.net2(pooled / count[:, None]), t[:, h:h + d]


def _sampling_grid(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """(O, H, W, 2) grid_sample coordinates in [-1, 1] from per-row x (O, W) and y (O, H) in [0, 1]."""
    x, y = torch.broadcast_tensors(xs[:, None, :], ys[:, :, None])
    return torch.stack([x, y], dim=3) * 2 - 1


def masks_to_layout(vecs: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor, obj_to_img: torch.Tensor,
                    num_images: int, size: int) -> torch.Tensor:
    """(B, D, size, size): each object's vector times its box-relative mask, placed in its box, summed."""
    lin = torch.linspace(0, 1, size, dtype=vecs.dtype, device=vecs.device)[None]
    x0, y0, x1, y1 = boxes.to(vecs.dtype).unbind(1)
    grid = _sampling_grid((lin - x0[:, None]) / (x1 - x0).clamp(min=1e-4)[:, None],
                          (lin - y0[:, None]) / (y1 - y0).clamp(min=1e-4)[:, None])
    placed = F.grid_sample(vecs[:, :, None, None] * masks[:, None].to(vecs.dtype), grid, align_corners=True)
    return vecs.new_zeros(num_images, vecs.shape[1], size, size).index_add(0, obj_to_img, placed)


def crop_objects(images: torch.Tensor, boxes: torch.Tensor, obj_to_img: torch.Tensor, size: int) -> torch.Tensor:
    """(O, C, size, size) bilinear crops of every object's box (sg2im's ``crop_bbox_batch``)."""
    t = torch.linspace(0, 1, size, dtype=images.dtype, device=images.device)[None]
    b = boxes.to(images.dtype)
    grid = _sampling_grid(b[:, 0:1] + (b[:, 2:3] - b[:, 0:1]) * t, b[:, 1:2] + (b[:, 3:4] - b[:, 1:2]) * t)
    return F.grid_sample(images[obj_to_img], grid, align_corners=True)


class RefinementNetwork(nn.Module):
    """Chen and Koltun's cascaded refinement network as sg2im builds it."""

    def __init__(self, layout_dim: int, dims: tuple[int, ...], leak: float):
        super().__init__()
        stages, prev = [], 1
        for d in dims:
            stages.append(nn.Sequential(_conv(layout_dim + prev, d, 3), nn.BatchNorm2d(d), nn.LeakyReLU(leak),
                                        _conv(d, d, 3), nn.BatchNorm2d(d), nn.LeakyReLU(leak)))
            prev = d
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(_conv(prev, prev, 3), nn.LeakyReLU(leak), _conv(prev, 3, 1))

    def forward(self, layout: torch.Tensor) -> torch.Tensor:
        n, _, h, w = layout.shape
        k = 2 ** len(self.stages)
        feats = layout.new_zeros(n, 1, h // k, w // k)
        for stage in self.stages:
            feats = F.interpolate(feats, scale_factor=2, mode="nearest")
            factor = h // feats.shape[-2]
            pooled = F.avg_pool2d(layout, factor) if factor > 1 else layout
            feats = stage(torch.cat([pooled, feats], 1))
        return self.head(feats)


class Sg2ImGenerator(nn.Module):
    """Scene graph -> image: graph convolution, box and mask nets, layout, refinement network."""

    def __init__(self, num_objects: int, num_predicates: int, image_size: int, arch: Arch):
        super().__init__()
        a = arch
        if image_size % 2 ** len(a.refinement_dims):
            raise ConfigError(f"image size {image_size} is not divisible by 2^{len(a.refinement_dims)} "
                              f"(one halving per refinement module)")
        if a.mask_size < 2 or a.mask_size & (a.mask_size - 1):
            raise ConfigError(f"mask size {a.mask_size} is not a power of 2")
        self.image_size, self.noise_dim = image_size, a.layout_noise_dim
        self.obj_embeddings = nn.Embedding(num_objects + 1, a.embedding_dim)
        self.pred_embeddings = nn.Embedding(num_predicates, a.embedding_dim)
        dims = [a.embedding_dim] + [a.gconv_dim] * a.gconv_num_layers
        self.gconvs = nn.ModuleList(TripleConv(i, o, a.gconv_hidden_dim) for i, o in zip(dims[:-1], dims[1:]))
        self.box_net = _mlp([a.gconv_dim, a.gconv_hidden_dim, 4])
        mask_layers: list[nn.Module] = []
        for _ in range(int(math.log2(a.mask_size))):
            mask_layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.BatchNorm2d(a.gconv_dim),
                            nn.Conv2d(a.gconv_dim, a.gconv_dim, 3, padding=1), nn.ReLU()]
        self.mask_net = nn.Sequential(*mask_layers, nn.Conv2d(a.gconv_dim, 1, 1))
        self.refinement = RefinementNetwork(a.gconv_dim + a.layout_noise_dim, a.refinement_dims, a.leak)

    def forward(self, objs, triples, obj_to_img, boxes, masks, num_images: int,
                generator: torch.Generator | None = None):
        """(images in sg2im's normalised space, predicted boxes, predicted masks); the layout uses
        the given ``boxes`` and ``masks`` (ground truth)."""
        s, p, o = triples.unbind(1)
        obj, pred = self.obj_embeddings(objs), self.pred_embeddings(p)
        for gconv in self.gconvs:
            obj, pred = gconv(obj, pred, s, o)
        boxes_pred = self.box_net(obj)
        masks_pred = self.mask_net(obj[:, :, None, None]).squeeze(1).sigmoid()
        layout = masks_to_layout(obj, boxes, masks, obj_to_img, num_images, self.image_size)
        noise = torch.randn((num_images, self.noise_dim, *layout.shape[-2:]), generator=generator,
                            dtype=layout.dtype, device=layout.device)
        return self.refinement(torch.cat([layout, noise], 1)), boxes_pred, masks_pred


def conv_stack(arch: str, cin: int, leak: float) -> tuple[nn.Sequential, int]:
    """sg2im's ``build_cnn`` for 'CK-C-S' layers, valid padding: BN + LeakyReLU before each conv but the first."""
    layers: list[nn.Module] = []
    for i, spec in enumerate(arch.split(",")):
        parts = spec.strip()[1:].split("-")
        if not spec.strip().startswith("C") or len(parts) != 3 or not all(v.isdigit() for v in parts):
            raise ConfigError(f"discriminator arch {arch!r}: layer {spec!r} is not CK-C-S (kernel, channels, stride)")
        k, cout, stride = (int(v) for v in parts)
        if i:
            layers += [nn.BatchNorm2d(cin), nn.LeakyReLU(leak)]
        layers.append(nn.Conv2d(cin, cout, k, stride=stride, padding=0))
        cin = cout
    return nn.Sequential(*layers), cin


class PatchDiscriminator(nn.Module):
    def __init__(self, arch: str, leak: float):
        super().__init__()
        self.cnn, channels = conv_stack(arch, 3, leak)
        # built as in sg2im, whose forward never calls it: the last conv's channels are the patch scores
        self.classifier = nn.Conv2d(channels, 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.cnn(images)


class AcCropDiscriminator(nn.Module):
    """Real/fake and class scores of every object's crop (sg2im's auxiliary-classifier object D)."""

    def __init__(self, num_objects: int, arch: str, crop_size: int, leak: float):
        super().__init__()
        cnn, channels = conv_stack(arch, 3, leak)
        self.crop_size = crop_size
        self.cnn = nn.Sequential(cnn, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1024))
        self.real_classifier = nn.Linear(1024, 1)
        self.obj_classifier = nn.Linear(1024, num_objects)

    def forward(self, images, objs, boxes, obj_to_img):
        vecs = self.cnn(crop_objects(images, boxes, obj_to_img, self.crop_size))
        return self.real_classifier(vecs), F.cross_entropy(self.obj_classifier(vecs), objs)


def _bce(scores: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(scores, torch.full_like(scores, target))


def to_sg2im(images: torch.Tensor) -> torch.Tensor:
    """Our [-1, 1] images -> sg2im's ImageNet-normalised space."""
    mean, std = (images.new_tensor(v)[:, None, None] for v in (IMAGENET_MEAN, IMAGENET_STD))
    return ((images + 1) / 2 - mean) / std


def from_sg2im(images: torch.Tensor) -> torch.Tensor:
    """sg2im's normalised space -> [-1, 1], clipped (no per-image min-max stretch)."""
    mean, std = (images.new_tensor(v)[:, None, None] for v in (IMAGENET_MEAN, IMAGENET_STD))
    return (images * std + mean).clamp(0, 1) * 2 - 1


class Sg2Im:
    """The generator, both discriminators and their Adam optimisers; ``step`` is one training step."""

    def __init__(self, vocab, image_size: int, arch: Arch, lr: float = 1e-4, weights: LossWeights = LossWeights()):
        self.arch, self.weights = arch, weights
        self.generator = Sg2ImGenerator(vocab.num_objects, vocab.num_predicates, image_size, arch)
        self.d_obj = AcCropDiscriminator(vocab.num_objects, arch.d_arch, arch.crop_size, arch.leak)
        self.d_img = PatchDiscriminator(arch.d_arch, arch.leak)
        self.opt_g, self.opt_d_obj, self.opt_d_img = (torch.optim.Adam(m.parameters(), lr=lr)
                                                      for m in (self.generator, self.d_obj, self.d_img))

    def params(self) -> dict[str, int]:
        g = self.generator
        count = lambda *ms: sum(p.numel() for m in ms for p in m.parameters())  # noqa: E731
        return {"generator": count(g), "graph_conv": count(g.obj_embeddings, g.pred_embeddings, g.gconvs),
                "box_net": count(g.box_net), "mask_net": count(g.mask_net), "refinement": count(g.refinement),
                "d_obj": count(self.d_obj), "d_img": count(self.d_img)}

    def step(self, batch) -> dict[str, float]:
        """G, then the object D, then the image D on one batch (sg2im's order); the losses as floats."""
        w = self.weights
        real = to_sg2im(batch.images)
        fake, boxes_pred, _ = self.generator(batch.objs, batch.triples, batch.obj_to_img, batch.boxes, batch.masks,
                                             batch.num_images)
        obj_args = (batch.objs, batch.boxes, batch.obj_to_img)
        scores_obj, ac = self.d_obj(fake, *obj_args)
        terms = {"l1_pixel": F.l1_loss(fake, real), "bbox_pred": F.mse_loss(boxes_pred, batch.boxes), "ac": ac,
                 "g_gan_obj": _bce(scores_obj, 1.0), "g_gan_img": _bce(self.d_img(fake), 1.0)}
        total = (w.l1_pixel * terms["l1_pixel"] + w.bbox_pred * terms["bbox_pred"] + w.ac * terms["ac"]
                 + w.discriminator * (w.d_obj * terms["g_gan_obj"] + w.d_img * terms["g_gan_img"]))
        losses = {k: float(v.detach()) for k, v in terms.items()} | {"total": float(total.detach())}
        if not math.isfinite(losses["total"]):
            return losses | {"skipped": 1.0}
        self.opt_g.zero_grad()
        total.backward()
        self.opt_g.step()
        fake = fake.detach()
        scores_fake, ac_fake = self.d_obj(fake, *obj_args)
        scores_real, ac_real = self.d_obj(real, *obj_args)
        d_obj = _bce(scores_real, 1.0) + _bce(scores_fake, 0.0) + ac_real + ac_fake
        self.opt_d_obj.zero_grad()
        d_obj.backward()
        self.opt_d_obj.step()
        scores_fake = self.d_img(fake)
        d_img = _bce(self.d_img(real), 1.0) + _bce(scores_fake, 0.0)
        self.opt_d_img.zero_grad()
        d_img.backward()
        self.opt_d_img.step()
        return losses | {"d_obj": float(d_obj.detach()), "d_img": float(d_img.detach())}

    @torch.no_grad()
    def generate(self, batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [-1, 1] from the batch's GT boxes and masks (eval mode)."""
        was_training = self.generator.training
        self.generator.eval()
        images, _, _ = self.generator(batch.objs, batch.triples, batch.obj_to_img, batch.boxes, batch.masks,
                                      batch.num_images, generator=generator)
        self.generator.train(was_training)
        return from_sg2im(images)


# -- data -----------------------------------------------------------------------------------------------
def shapes_split(root: str, split: str, mask_size: int, seed: int = 0):
    """The Shapes dataset at ``root`` through layout2img's own loader (image size from its meta.json)."""
    from layout2img.data.build import build_dataset

    if not Path(root).is_dir():
        raise DataError(f"--data {root}: no such folder (write the Shapes world with "
                        f"`layout2img prepare shapes --out {root}`)")
    return build_dataset({"dataset": "shapes", "root": str(root), "mask_size": int(mask_size)}, split, seed=seed)


def _first(dataset, n: int):
    from layout2img.data.batch import collate

    return collate([dataset[i] for i in range(min(n, len(dataset)))])


# -- --train ---------------------------------------------------------------------------------------------
def sample_grid(path: Path, model: Sg2Im, dataset, n: int = 8, seed: int = 0) -> None:
    """Val scenes in columns; rows: the GT layout (boxes, masks, labels), the real image, sg2im's image."""
    from layout2img.visualize import draw_layout, save_grid

    batch = _first(dataset, n)
    fake = model.generate(batch, torch.Generator().manual_seed(seed))
    names = dataset.vocab.object_names
    layouts = []
    for i in range(batch.num_images):
        idx = batch.objects_of(i)
        idx = idx[batch.objs[idx] != 0]  # __image__ covers everything
        layouts.append(draw_layout(None, batch.boxes[idx], [names[int(c)] for c in batch.objs[idx]],
                                   batch.masks[idx], size=dataset.image_size))
    save_grid(path, [layouts, batch.images, fake], row_titles=["GT layout", "real", "sg2im"])


def train(args, arch: Arch, record: dict) -> dict:
    from safetensors.torch import save_file
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from layout2img.data.batch import collate
    from layout2img.io import atomic_save, atomic_write_text
    from layout2img.training.distributed import ResumableSampler, infinite_batches

    wall0 = time.time()
    torch.manual_seed(args.seed)
    train_set = shapes_split(args.data, "train", arch.mask_size, args.seed)
    val_set = shapes_split(args.data, "val", arch.mask_size, args.seed)
    sampler = ResumableSampler(len(train_set), args.seed)
    loader = DataLoader(train_set, batch_size=args.train_batch, sampler=sampler, collate_fn=collate, num_workers=0,
                        drop_last=True)
    model = Sg2Im(train_set.vocab, train_set.image_size, arch, lr=args.lr)
    model.generator.train()
    budget = None if args.steps else args.cpu_seconds
    cpu_start = time.process_time()
    history, skipped, step, losses = [], 0, 0, {}
    bar = tqdm(total=args.steps or round(budget), unit="step" if args.steps else "cpu-s", dynamic_ncols=True,
               desc="sg2im train", disable=args.quiet)
    cpu_last = cpu_start
    try:
        for _, _, batch in infinite_batches(loader, sampler, 0, 0):
            losses = model.step(batch)
            step += 1
            skipped += int("skipped" in losses)
            if step % 10 == 0 or step == 1:
                history.append({"step": step, "cpu_s": round(time.process_time(), 1),
                                **{k: round(v, 5) for k, v in losses.items()}})
            now = time.process_time()
            bar.update(1 if args.steps else min(now, budget) - min(cpu_last, budget))
            cpu_last = now
            bar.set_postfix(step=step, l1=f"{losses['l1_pixel']:.3f}", d_img=f"{losses.get('d_img', 0):.3f}")
            if (args.steps and step >= args.steps) or (budget and now >= budget):
                break
    finally:
        bar.close()
    cpu_total = time.process_time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.generator.state_dict().items()}
    atomic_save(out / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
    sample_grid(out / "samples.png", model, val_set, seed=args.seed)
    result = {
        "steps": step, "skipped_steps": skipped, "batch": args.train_batch, "threads": torch.get_num_threads(),
        "seed": args.seed, "lr": args.lr, "adam_betas": [0.9, 0.999],
        "budget": {"cpu_seconds": budget, "steps": args.steps,
                   "clock": "time.process_time() of the whole process (imports, dataset, model, data loading, steps)"},
        "cpu_seconds": round(cpu_total, 1), "cpu_seconds_before_first_step": round(cpu_start, 1),
        "cpu_seconds_per_step": round((cpu_total - cpu_start) / max(1, step), 3),
        "wall_seconds": round(time.time() - wall0, 1), "final_losses": losses, "history": history,
        "data": str(args.data), "train_images": len(train_set), "params": model.params(),
    }
    config = {"model": "sg2im (Johnson et al. 2018), benchmarks/sg2im_baseline.py", "arch": asdict(arch),
              "loss_weights": asdict(model.weights), "image_size": train_set.image_size,
              "vocab": train_set.vocab.to_dict(), "training": result, "machine": record}
    atomic_write_text(out / "config.json", json.dumps(config, indent=1) + "\n")
    return result


# -- --evaluate ------------------------------------------------------------------------------------------
def load_generator(out: Path) -> tuple[Sg2ImGenerator, dict]:
    from layout2img.io import load_weights, read_json
    from layout2img.vocab import Vocab

    if not (out / "config.json").is_file() or not (out / "model.safetensors").is_file():
        raise CheckpointError(f"--out {out}: no trained baseline here (config.json and model.safetensors); "
                              "train one with --train")
    config = read_json(out / "config.json", "sg2im baseline config", CheckpointError)
    a = dict(config["arch"])
    arch = Arch(**{**a, "refinement_dims": tuple(a["refinement_dims"])})
    vocab = Vocab.from_dict(config["vocab"])
    g = Sg2ImGenerator(vocab.num_objects, vocab.num_predicates, int(config["image_size"]), arch)
    g.load_state_dict(load_weights(out / "model.safetensors"))
    return g.eval(), config


def load_classifier(path: str, vocab):
    from layout2img.models.classifier import ObjectClassifier

    if not Path(path).is_dir():
        raise CheckpointError(f"--classifier {path}: no such folder (train one with `layout2img train-classifier`)")
    clf = ObjectClassifier.from_pretrained(path)
    if tuple(clf.vocab.object_names) != tuple(vocab.object_names):
        raise ConfigError(f"--classifier {path}: trained on vocabulary {clf.vocab.name!r}, not {vocab.name!r}")
    return clf


def evaluate(args, record: dict) -> dict:
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from layout2img.data.batch import collate
    from layout2img.io import atomic_dir
    from layout2img.metrics.accuracy import ObjectAccuracy
    from layout2img.metrics.fid import (FrechetInceptionDistance, InceptionFeatureExtractor, default_feature_cache,
                                        quantize)
    from layout2img.visualize import to_pil

    out = Path(args.out)
    generator, config = load_generator(out)
    dataset = shapes_split(args.data, "val", config["arch"]["mask_size"], args.seed)
    if tuple(dataset.vocab.object_names) != tuple(config["vocab"]["object_idx_to_name"]):
        raise ConfigError(f"--data {args.data}: its vocabulary is not the one {out} was trained on")
    if dataset.image_size != generator.image_size:
        raise ConfigError(f"--data {args.data}: {dataset.image_size} px images, the model makes "
                          f"{generator.image_size} px")
    clf = load_classifier(args.classifier, dataset.vocab)
    acc_fake, acc_real = ObjectAccuracy(clf), ObjectAccuracy(clf)
    n = min(len(dataset), args.max_images)
    loader = DataLoader(Subset(dataset, range(n)), batch_size=args.eval_batch, shuffle=False, collate_fn=collate)
    rng = torch.Generator().manual_seed(args.seed)
    image_ids, index = [], 0
    cpu0, wall0 = time.process_time(), time.time()
    with atomic_dir(out / "real", overwrite=True) as real_dir, atomic_dir(out / "fake", overwrite=True) as fake_dir, \
            tqdm(total=n, desc="generate", unit="img", disable=args.quiet) as bar, torch.no_grad():
        for batch in loader:
            real = quantize(batch.images)
            images, _, _ = generator(batch.objs, batch.triples, batch.obj_to_img, batch.boxes, batch.masks,
                                     batch.num_images, generator=rng)
            fake = quantize(from_sg2im(images))
            for i in range(batch.num_images):
                to_pil(real[i]).save(real_dir / f"{index + i:06d}.png", format="PNG")
                to_pil(fake[i]).save(fake_dir / f"{index + i:06d}_00.png", format="PNG")
            acc_real.update(real, batch.boxes, batch.obj_to_img, batch.objs)
            acc_fake.update(fake, batch.boxes, batch.obj_to_img, batch.objs)
            image_ids += list(batch.image_ids)
            index += batch.num_images
            bar.update(batch.num_images)
    generate_s = time.time() - wall0
    extractor = InceptionFeatureExtractor(args.inception, device="cpu", batch_size=32)
    fid = FrechetInceptionDistance()
    # the real val images are the ones `layout2img evaluate` caches features of: the same cache
    fid.update(extractor.folder(out / "real", progress=not args.quiet, cache_dir=default_feature_cache()),
               real=True)
    fid.update(extractor.folder(out / "fake", progress=not args.quiet), real=False)
    training = config["training"]
    ids_text = json.dumps([str(i) for i in image_ids])
    report = {
        "benchmark": "sg2im_baseline_evaluate", "machine": record,
        "protocol": {
            "dataset": "shapes", "data_root": str(args.data), "split": "val", "image_ids": image_ids,
            "image_ids_sha1": hashlib.sha1(ids_text.encode()).hexdigest(), "num_layouts": n,
            "num_real_images": n, "num_generated_images": n, "resolution": generator.image_size,
            "samples_per_layout": 1, "layout_source": "gt (ground-truth boxes and masks)", "seed": args.seed,
            "batch_size": args.eval_batch, "generator_mode": "eval (batch norm running statistics)",
            "feature_extractor": extractor.protocol(),
            "fid_definition": "pytorch-fid: PNG uint8 -> x/127.5-1 -> bilinear 299 -> pool3 2048-d; "
                              "|mu1-mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)) (scipy.linalg.sqrtm, eps 1e-6)",
            "object_accuracy": "the classifier's top-1 on crops at the GT boxes (__image__ excluded)",
            "classifier": str(args.classifier), "model": str(out), "steps": training["steps"],
            "cpu_seconds": training["cpu_seconds"], "train_batch": training["batch"],
            "threads": training["threads"], "train_budget": training["budget"], "images": str(out),
        },
        "metrics": {"fid": fid.compute(),
                    "object-acc": {"generated": acc_fake.compute(), "real": acc_real.compute(),
                                   "classifier_val_accuracy": clf.metadata.get("val_accuracy")}},
        "params": training["params"], "generate_seconds": round(generate_s, 1),
        "evaluate_cpu_seconds": round(time.process_time() - cpu0, 1),
    }
    save_report(report, args.report or out / "report.json")
    return report


# -- --speed ---------------------------------------------------------------------------------------------
def speed(args, arch: Arch, guard: dict, record: dict) -> dict:
    from layout2img.data.batch import collate
    from layout2img.vocab import Vocab
    from synthetic import SyntheticGraphs  # benchmarks/synthetic.py: speed.py's graphs

    vocab = Vocab.shapes()
    data = SyntheticGraphs(vocab, args.image_size, arch.mask_size, args.objects)
    batch = collate([data[i] for i in range(args.speed_batch)])
    torch.manual_seed(args.seed)
    model = Sg2Im(vocab, args.image_size, arch, lr=args.lr)
    model.generator.train()
    flops, note = count_flops(lambda: model.step(batch))  # one step's model FLOPs, as speed.py counts ours
    notes = [note] if note else []
    with watch_other_processes() as others:
        timing = repeat(lambda: model.step(batch), runs=args.steps, warmup=args.warmup)
    params = model.params()
    return {"benchmark": "sg2im_baseline_speed", "machine": record, "guard": guard,
            "img_per_s": timing.rate(args.speed_batch, "img/s"), "s_per_step": timing.summary("s"),
            "first_call_s": timing.first_s, "others_cpus_during": others["others_cpus"],
            "g_params_M": params["generator"] / 1e6, "d_params_M": (params["d_obj"] + params["d_img"]) / 1e6,
            "gflops_per_step": flops / 1e9 if flops else None, "notes": notes,
            "protocol": {"model": "sg2im defaults" if arch == Arch() else "tiny (--dry-run)",
                         "step": "G forward + backward (L1, box, AC, both GAN terms), Adam; object D and image D "
                                 "forward + backward on fake then real, Adam each",
                         "graphs": f"benchmarks/synthetic.py SyntheticGraphs, {args.objects} objects + __image__",
                         "batch": args.speed_batch, "image_size": args.image_size, "threads": torch.get_num_threads(),
                         "steps": args.steps, "warmup": args.warmup, "device": "cpu", "dtype": "fp32",
                         "data_loading": "excluded (one batch prepared in advance)"}}


# -- the driver -------------------------------------------------------------------------------------------
def figure_rows(results: dict) -> list[str]:
    rows = []
    if "train" in results:
        t, m = results["train"], results["record"]
        rows.append(figure_row(f"sg2im baseline: training, batch {t['batch']}, {t['threads']} thread(s)",
                               f"{t['steps']} steps in {t['cpu_seconds']:.0f} CPU-s ({t['cpu_seconds_per_step']:.2f} "
                               f"CPU-s a step; {t['wall_seconds']:.0f} s wall; G {t['params']['generator'] / 1e6:.1f}M "
                               f"params) (one run)", m["command"], machine_line(m)))
    if "evaluate" in results:
        r = results["evaluate"]
        p, met = r["protocol"], r["metrics"]
        gen, real = met["object-acc"]["generated"]["top1"], met["object-acc"]["real"]["top1"]
        rows.append(figure_row(f"sg2im baseline ({p['steps']} steps, {p['cpu_seconds']:.0f} CPU-s): Shapes val, "
                               f"{p['num_layouts']} graphs, GT layouts, 1 sample: FID / object accuracy (real crops)",
                               f"FID {met['fid']['value']:.1f}, object acc {100 * gen:.1f} % (real {100 * real:.1f} %)"
                               f" (one run)", r["machine"]["command"], machine_line(r["machine"])))
    if "speed" in results:
        s = results["speed"]
        p = s["protocol"]
        tag = f"sg2im baseline, {p['threads']} thread{'s' if p['threads'] != 1 else ''}"
        busy = s.get("others_cpus_during")
        if busy is not None and busy > s["guard"]["max_load"]:
            tag += f", others used {busy:.2f} CPUs meanwhile"
        line = machine_line(s["machine"])
        rows.append(figure_row(f"{tag}: train img/s, batch {p['batch']}, {p['image_size']} px, fp32",
                               s["img_per_s"], s["machine"]["command"], line))
        gflops = f"{s['gflops_per_step']:.1f}" if s["gflops_per_step"] else "not counted"
        rows.append(figure_row(f"{tag}: G / D params, GFLOP per train step",
                               f"{s['g_params_M']:.1f}M / {s['d_params_M']:.1f}M, {gflops}", s["machine"]["command"],
                               line))
    return rows


def parse_args(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", action="store_true", help="train for --cpu-seconds (or --steps), save into --out")
    p.add_argument("--evaluate", action="store_true", help="FID and object accuracy of --out on Shapes val")
    p.add_argument("--speed", action="store_true", help="training img/s on speed.py's synthetic graphs")
    p.add_argument("--dry-run", action="store_true",
                   help="a tiny model, 2 steps, 4 val images (all three modes unless some are named): seconds")
    p.add_argument("--data", default="data/shapes_64", help="the Shapes dataset folder")
    p.add_argument("--out", default=None, help="the run folder (default runs/sg2im_baseline, "
                   "runs/sg2im_baseline_dry_run with --dry-run)")
    p.add_argument("--cpu-seconds", type=float, default=DEFAULT_CPU_SECONDS,
                   help="--train: stop once the process has used this much CPU time (time.process_time())")
    p.add_argument("--steps", type=int, default=None,
                   help="--train: this many steps instead of the CPU budget; --speed: timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="--speed: untimed steps first")
    p.add_argument("--batch", type=int, default=None, help="training batch (default 8 for --train, 16 for --speed)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of G and both Ds (sg2im: 1e-4)")
    p.add_argument("--max-images", type=int, default=1000, help="--evaluate: the first N val graphs")
    p.add_argument("--eval-batch", type=int, default=16, help="--evaluate: generation batch")
    p.add_argument("--classifier", default="runs/shapes_classifier", help="the object classifier folder")
    p.add_argument("--inception", default=None, help="the FID Inception TorchScript (default: the installed wheel's)")
    p.add_argument("--report", default=None, help="--evaluate: the JSON report (default OUT/report.json)")
    p.add_argument("--speed-json", default=None, help="--speed: the JSON (default OUT/speed.json)")
    p.add_argument("--objects", type=int, default=6, help="--speed: objects per synthetic graph (speed.py's 6)")
    p.add_argument("--image-size", type=int, default=64, help="--speed: image size of the synthetic graphs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_guard_args(p)
    args = p.parse_args(argv)
    if args.dry_run:
        if not (args.train or args.evaluate or args.speed):
            args.train = args.evaluate = args.speed = True
        args.steps = args.steps or DRY_RUN["steps"]
        args.max_images = min(args.max_images, DRY_RUN["max_images"])
        args.eval_batch, args.warmup = DRY_RUN["eval_batch"], DRY_RUN["warmup"]
        args.batch = args.batch or DRY_RUN["batch"]
        args.image_size = 32
    if not (args.train or args.evaluate or args.speed):
        p.error("nothing to do: give --train, --evaluate, --speed or --dry-run")
    for flag, low in (("steps", 1), ("batch", 2), ("threads", 1), ("max_images", 2), ("eval_batch", 1),
                      ("objects", 2), ("warmup", 0)):
        value = getattr(args, flag)
        if value is not None and value < low:
            p.error(f"--{flag.replace('_', '-')} must be at least {low}, got {value}")
    if args.cpu_seconds <= 0:
        p.error(f"--cpu-seconds must be positive, got {args.cpu_seconds}")
    args.train_batch, args.speed_batch = args.batch or 8, args.batch or 16
    args.out = args.out or ("runs/sg2im_baseline_dry_run" if args.dry_run else "runs/sg2im_baseline")
    return args


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    arch = TINY if args.dry_run else Arch()
    # --speed is timed, so it wants a quiet machine; a CPU-time budget and the metrics do not depend on the load
    guard = guard_from_args(args) if args.speed else check_quiet(args.max_load, allow_busy=True)
    record = machine(guard=guard)
    results: dict = {"record": record}
    try:
        # bad arguments fail now, not after training or generating
        if (args.train or args.evaluate) and not Path(args.data).is_dir():
            shapes_split(args.data, "val", arch.mask_size)
        if args.evaluate and not args.train:
            load_generator(Path(args.out))
        if args.evaluate:
            from layout2img.vocab import Vocab

            load_classifier(args.classifier, Vocab.shapes())
        if args.train:
            results["train"] = train(args, arch, record)
            print(json.dumps({k: v for k, v in results["train"].items() if k != "history"}), flush=True)
        if args.evaluate:
            results["evaluate"] = evaluate(args, record)
            r = results["evaluate"]
            print(json.dumps({"metrics": r["metrics"], "params": r["params"]}), flush=True)
        if args.speed:
            args.steps = args.steps or 10
            results["speed"] = speed(args, arch, guard, record)
            save_report(results["speed"], args.speed_json or Path(args.out) / "speed.json")
    except Layout2ImgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(FIGURE_HEADER)
    print("\n".join(figure_rows(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
