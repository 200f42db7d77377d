"""Synthetic scene graphs with random boxes, masks, relations and images, for timing without a dataset."""
from __future__ import annotations

import torch


class SyntheticGraphs(torch.utils.data.Dataset):
    """Random scene graphs with images, in the datasets' item format, for a vocabulary."""

    def __init__(self, vocab, image_size: int, mask_size: int = 16, num_objects: int = 6, size: int = 256,
                 seed: int = 0):
        self.vocab, self.image_size, self.mask_size = vocab, image_size, mask_size
        self.num_objects, self.size, self.seed = num_objects, size, seed

    def __len__(self):
        return self.size

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        n = self.num_objects
        objs = torch.randint(1, self.vocab.num_objects, (n,), generator=g)
        xy = torch.rand(n, 2, generator=g) * 0.7
        wh = 0.1 + torch.rand(n, 2, generator=g) * 0.3
        boxes = torch.cat([xy, (xy + wh).clamp(max=1.0)], 1)
        masks = (torch.rand(n, self.mask_size, self.mask_size, generator=g) > 0.3).float()
        partners = (torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n
        preds = torch.randint(1, self.vocab.num_predicates, (n,), generator=g)
        triples = [[i, int(p), int(o)] for i, (p, o) in enumerate(zip(preds, partners))]
        triples += [[i, 0, n] for i in range(n)]
        image = torch.rand(3, self.image_size, self.image_size, generator=g) * 2 - 1
        return {"objs": torch.cat([objs, torch.zeros(1, dtype=torch.long)]),
                "boxes": torch.cat([boxes, torch.tensor([[0.0, 0.0, 1.0, 1.0]])]),
                "masks": torch.cat([masks, torch.ones(1, self.mask_size, self.mask_size)]),
                "triples": torch.tensor(triples), "image": image, "caption": None, "image_id": index}

    def graph(self, index: int = 0) -> dict:
        """The same scene as an sg2im dict (objects and relations, no boxes): what a user passes."""
        item = self[index]
        n = self.num_objects
        names = [self.vocab.object_names[int(o)] for o in item["objs"][:n]]
        rels = [[s, self.vocab.predicate_names[p], o] for s, p, o in item["triples"][:n].tolist()]
        return {"objects": names, "relationships": rels}
