"""Triple graph convolution (sg2im): object and predicate vectors pass messages along triples.

A batch is packed (``layout2img.data.batch``): ``objs`` (O,) and ``triples`` (T, 3) with
batch-global object indices, so one call handles many graphs. Message passing gathers the
subject and object vectors of every triple and scatters the results back with one product by
the triples' incidence matrix (deterministic on GPUs too): no Python loop over objects or triples.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

POOLINGS = ("avg", "sum")
TEXT_MODES = ("add", "replace")


def build_mlp(dims: list[int], final_relu: bool = True, norm: str = "none") -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]`` with ReLU (and optional batch norm) between."""
    if norm not in ("none", "batch"):
        raise ConfigError(f"gcn.mlp_norm: unknown normalisation {norm!r} (none or batch)")
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        last = i == len(dims) - 2
        if not last or final_relu:
            if norm == "batch":
                layers.append(nn.BatchNorm1d(dims[i + 1]))
            layers.append(nn.ReLU(inplace=True))
    for m in layers:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


class GraphTripleConv(nn.Module):
    """One layer: each triple (s, p, o) maps [v_s, v_p, v_o] to new (s, p, o) candidates.

    Predicates take their new vector directly; each object pools (avg or sum) the candidates
    from every triple it takes part in, then a second MLP refines the pooled vector. An object
    in no triple pools zeros (sg2im's behaviour).
    """

    def __init__(self, input_dim: int, output_dim: int | None = None, hidden_dim: int = 512,
                 pooling: str = "avg", mlp_norm: str = "none"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"gcn.pooling: unknown pooling {pooling!r} ({' or '.join(POOLINGS)})")
        output_dim = output_dim or input_dim
        self.input_dim, self.output_dim, self.hidden_dim = input_dim, output_dim, hidden_dim
        self.pooling = pooling
        self.net1 = build_mlp([3 * input_dim, hidden_dim, 2 * hidden_dim + output_dim], norm=mlp_norm)
        self.net2 = build_mlp([hidden_dim, hidden_dim, output_dim], norm=mlp_norm)

    def forward(self, obj_vecs: torch.Tensor, pred_vecs: torch.Tensor, edges: torch.Tensor):
        """obj_vecs (O, Din), pred_vecs (T, Din), edges (T, 2) [subject, object] -> (O, Dout), (T, Dout)."""
        num_objs = obj_vecs.shape[0]
        s_idx, o_idx = edges[:, 0], edges[:, 1]
        triple_in = torch.cat([obj_vecs[s_idx], pred_vecs, obj_vecs[o_idx]], dim=1)
        triple_out = self.net1(triple_in)
        h = self.hidden_dim
        new_s, new_p, new_o = triple_out.split([h, self.output_dim, h], dim=1)

        # Scatter-add as a product with the (O, 2T) incidence matrix, not index_add: CUDA's
        # index_add sums with atomics in a varying order, so the same graph would give slightly
        # different images run to run (and `edit` could not start from `generate`'s exact image).
        incidence = torch.cat([nn.functional.one_hot(s_idx, num_objs), nn.functional.one_hot(o_idx, num_objs)]).T
        incidence = incidence.to(triple_out.dtype)
        pooled = incidence @ torch.cat([new_s, new_o])
        if self.pooling == "avg":
            pooled = pooled / incidence.sum(dim=1).clamp(min=1).unsqueeze(1)
        return self.net2(pooled), new_p


class GraphTripleConvNet(nn.Module):
    """A stack of :class:`GraphTripleConv` layers of one width."""

    def __init__(self, width: int, num_layers: int = 4, hidden_dim: int = 512, pooling: str = "avg",
                 mlp_norm: str = "none"):
        super().__init__()
        self.layers = nn.ModuleList(
            GraphTripleConv(width, width, hidden_dim, pooling, mlp_norm) for _ in range(num_layers)
        )

    def forward(self, obj_vecs, pred_vecs, edges):
        for layer in self.layers:
            obj_vecs, pred_vecs = layer(obj_vecs, pred_vecs, edges)
        return obj_vecs, pred_vecs


class GraphEncoder(nn.Module):
    """Object/predicate embeddings followed by ``layers`` triple graph convolutions.

    ``text_dim > 0`` lets an object carry a text embedding (CLIP): projected to ``embed_dim``
    and added to (``text_mode='add'``) or substituted for (``'replace'``) its category
    embedding, so a free-text object ("a black sheep") can enter the graph.
    ``layers == 0`` is a single linear map (sg2im's option), useful as an ablation.
    """

    def __init__(self, num_objects: int, num_predicates: int, embed_dim: int = 128, width: int = 128,
                 hidden: int = 512, layers: int = 5, pooling: str = "avg", text_dim: int = 0,
                 text_mode: str = "add", mlp_norm: str = "none"):
        super().__init__()
        if text_mode not in TEXT_MODES:
            raise ConfigError(f"gcn.text_mode: unknown mode {text_mode!r} ({' or '.join(TEXT_MODES)})")
        for key, value in (("embed_dim", embed_dim), ("width", width), ("hidden", hidden)):
            if int(value) <= 0:
                raise ConfigError(f"gcn.{key}: must be positive, got {value}")
        if layers < 0:
            raise ConfigError(f"gcn.layers: must be >= 0, got {layers}")
        self.num_objects, self.num_predicates = num_objects, num_predicates
        self.width, self.text_dim, self.text_mode = width, text_dim, text_mode
        self.obj_embeddings = nn.Embedding(num_objects, embed_dim)
        self.pred_embeddings = nn.Embedding(num_predicates, embed_dim)
        self.text_proj = nn.Linear(text_dim, embed_dim) if text_dim > 0 else None
        if layers == 0:
            self.project = nn.Linear(embed_dim, width)
            self.first = self.net = None
        else:
            self.project = None
            self.first = GraphTripleConv(embed_dim, width, hidden, pooling, mlp_norm)
            self.net = GraphTripleConvNet(width, layers - 1, hidden, pooling, mlp_norm)

    def embed_objects(self, objs: torch.Tensor, obj_text_emb: torch.Tensor | None = None,
                      obj_text_mask: torch.Tensor | None = None) -> torch.Tensor:
        vecs = self.obj_embeddings(objs)
        if obj_text_emb is None:
            return vecs
        if self.text_proj is None:
            raise ConfigError("object text embeddings given, but the graph encoder has text_dim=0")
        if obj_text_emb.shape != (objs.shape[0], self.text_dim):
            raise ConfigError(
                f"object text embeddings: expected shape ({objs.shape[0]}, {self.text_dim}), "
                f"got {tuple(obj_text_emb.shape)}"
            )
        text = self.text_proj(obj_text_emb.to(vecs.dtype))
        if self.text_mode == "add":
            text_vecs = vecs + text
        else:
            text_vecs = text
        if obj_text_mask is None:
            return text_vecs
        # where() rather than a product: a row without text may hold garbage (even NaN).
        return torch.where(obj_text_mask.to(torch.bool).unsqueeze(1), text_vecs, vecs)

    def forward(self, objs: torch.Tensor, triples: torch.Tensor, obj_text_emb: torch.Tensor | None = None,
                obj_text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """objs (O,), triples (T, 3) -> object vectors (O, width).

        ``obj_text_emb`` (O, text_dim) with ``obj_text_mask`` (O,) bool saying which rows are real
        (None: all rows).
        """
        obj_vecs = self.embed_objects(objs, obj_text_emb, obj_text_mask)
        if self.project is not None:
            return self.project(obj_vecs)
        pred_vecs = self.pred_embeddings(triples[:, 1])
        edges = triples[:, [0, 2]]
        obj_vecs, pred_vecs = self.first(obj_vecs, pred_vecs, edges)
        obj_vecs, _ = self.net(obj_vecs, pred_vecs, edges)
        return obj_vecs
