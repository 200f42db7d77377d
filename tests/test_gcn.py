"""GraphEncoder / GraphTripleConv: shapes, pooling, packing, gradients, text embeddings."""
import pytest
import torch

from layout2img.errors import ConfigError
from layout2img.models.gcn import GraphEncoder, GraphTripleConv


def _packed():
    # image 0: objects 0,1,2 (+ __image__ 3); image 1: objects 4,5 (+ __image__ 6)
    objs = torch.tensor([1, 2, 3, 0, 4, 5, 0])
    triples = torch.tensor([
        [0, 1, 1], [1, 2, 2], [0, 0, 3], [1, 0, 3], [2, 0, 3],
        [4, 3, 5], [4, 0, 6], [5, 0, 6],
    ])
    return objs, triples


def _split(objs, triples, lo, hi, tlo, thi):
    return objs[lo:hi], triples[tlo:thi] - torch.tensor([lo, 0, lo])


def test_output_shape_and_defaults():
    enc = GraphEncoder(10, 5)
    objs, triples = _packed()
    out = enc(objs, triples)
    assert out.shape == (7, 128)
    assert len(enc.net.layers) == 4  # 5 layers in all: the first conv plus 4
    assert enc.first.hidden_dim == 512


def test_pooling_matches_a_loop_reference():
    torch.manual_seed(0)
    for pooling in ("avg", "sum"):
        conv = GraphTripleConv(6, 5, hidden_dim=7, pooling=pooling)
        obj = torch.randn(4, 6)
        pred = torch.randn(3, 6)
        edges = torch.tensor([[0, 1], [0, 2], [2, 1]])  # object 3 is in no triple
        new_obj, new_pred = conv(obj, pred, edges)
        out = conv.net1(torch.cat([obj[edges[:, 0]], pred, obj[edges[:, 1]]], 1))
        s_part, p_part, o_part = out[:, :7], out[:, 7:12], out[:, 12:]
        pooled = torch.zeros(4, 7)
        counts = torch.zeros(4)
        for t in range(3):
            pooled[edges[t, 0]] += s_part[t]
            pooled[edges[t, 1]] += o_part[t]
            counts[edges[t, 0]] += 1
            counts[edges[t, 1]] += 1
        if pooling == "avg":
            pooled = pooled / counts.clamp(min=1)[:, None]
        torch.testing.assert_close(new_obj, conv.net2(pooled))
        torch.testing.assert_close(new_pred, p_part)


def test_packed_graphs_do_not_interact():
    torch.manual_seed(0)
    enc = GraphEncoder(10, 5, embed_dim=16, width=16, hidden=32, layers=3).eval()
    objs, triples = _packed()
    together = enc(objs, triples)
    first = enc(*_split(objs, triples, 0, 4, 0, 5))
    second = enc(*_split(objs, triples, 4, 7, 5, 8))
    torch.testing.assert_close(together, torch.cat([first, second]))


def test_gradients_reach_object_and_predicate_embeddings_and_text():
    torch.manual_seed(0)
    enc = GraphEncoder(10, 5, embed_dim=16, width=16, hidden=32, layers=2, text_dim=12)
    objs, triples = _packed()
    text = torch.randn(7, 12, requires_grad=True)
    mask = torch.tensor([True, False, True, False, False, True, False])
    out = enc(objs, triples, text, mask)
    out.pow(2).sum().backward()
    used_objs = objs.unique()
    used_preds = triples[:, 1].unique()
    assert enc.obj_embeddings.weight.grad[used_objs].abs().sum(1).gt(0).all()
    assert enc.pred_embeddings.weight.grad[used_preds].abs().sum(1).gt(0).all()
    assert enc.text_proj.weight.grad.abs().sum() > 0
    assert text.grad[mask].abs().sum(1).gt(0).all()
    assert torch.equal(text.grad[~mask], torch.zeros_like(text.grad[~mask]))


def test_text_modes():
    torch.manual_seed(0)
    objs = torch.tensor([1, 2])
    text = torch.randn(2, 4)
    mask = torch.tensor([True, False])
    add = GraphEncoder(5, 3, embed_dim=8, width=8, hidden=8, layers=0, text_dim=4, text_mode="add")
    rep = GraphEncoder(5, 3, embed_dim=8, width=8, hidden=8, layers=0, text_dim=4, text_mode="replace")
    rep.load_state_dict(add.state_dict())
    emb, proj = add.obj_embeddings.weight, add.text_proj(text)
    torch.testing.assert_close(add.embed_objects(objs, text, mask)[0], emb[1] + proj[0])
    torch.testing.assert_close(rep.embed_objects(objs, text, mask)[0], proj[0])
    # objects without text keep their category embedding, even if their text row is NaN
    text[1] = float("nan")
    for enc in (add, rep):
        torch.testing.assert_close(enc.embed_objects(objs, text, mask)[1], emb[2])


def test_layers_zero_is_a_linear_map():
    enc = GraphEncoder(5, 3, embed_dim=8, width=6, layers=0)
    objs, triples = torch.tensor([1, 2, 0]), torch.tensor([[0, 1, 1], [0, 0, 2], [1, 0, 2]])
    torch.testing.assert_close(enc(objs, triples), enc.project(enc.obj_embeddings(objs)))


def test_config_errors():
    with pytest.raises(ConfigError, match="pooling"):
        GraphEncoder(5, 3, pooling="max")
    with pytest.raises(ConfigError, match="text_mode"):
        GraphEncoder(5, 3, text_mode="concat")
    enc = GraphEncoder(5, 3, embed_dim=8, width=8, hidden=8, layers=1)
    with pytest.raises(ConfigError, match="text_dim=0"):
        enc(torch.tensor([1, 0]), torch.tensor([[0, 0, 1]]), torch.zeros(2, 4))
    enc = GraphEncoder(5, 3, embed_dim=8, width=8, hidden=8, layers=1, text_dim=4)
    with pytest.raises(ConfigError, match=r"expected shape \(2, 4\)"):
        enc(torch.tensor([1, 0]), torch.tensor([[0, 0, 1]]), torch.zeros(2, 3))
