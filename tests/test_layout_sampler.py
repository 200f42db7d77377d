"""LayoutSampler: seeded sampling, pinned boxes, losses, the relation hinge and its refinement."""
import random

import pytest
import torch

from layout2img.errors import ConfigError, GraphError
from layout2img.metrics.layout import relation_satisfaction
from layout2img.models.gcn import GraphEncoder
from layout2img.models.layout import LayoutPredictor
from layout2img.models.layout_relations import (GEOMETRIC_KINDS, pairwise_iou, project_boxes, refine_boxes,
                                               relation_hinge, thing_pairs)
from layout2img.models.layout_sampler import LayoutSampler, placement_ranks, sample_known_mask
from layout2img.models.losses import box_loss
from layout2img.relations import geometric_relation, relation_holds
from layout2img.vocab import Vocab

VOCAB = Vocab.shapes()
NAMES = VOCAB.predicate_names
PRED = {n: i for i, n in enumerate(NAMES)}
WIDTH = 16


def tiny_sampler(**kw) -> LayoutSampler:
    torch.manual_seed(0)
    options = dict(z_dim=4, layers=1, hidden=32, mask_size=4, box_hidden=16, mask_channels=4)
    options.update(kw)
    return LayoutSampler(WIDTH, VOCAB.num_predicates, **options)


def graph():
    """circle left of square, sky above both, plus __image__ (last) and its triples."""
    objs = torch.tensor([1, 2, 9, 0])
    triples = torch.tensor([[0, PRED["left of"], 1], [2, PRED["above"], 0], [2, PRED["above"], 1],
                            [0, 0, 3], [1, 0, 3], [2, 0, 3]])
    return objs, triples, torch.randn(4, WIDTH, generator=torch.Generator().manual_seed(3))


def draw(sampler, seed, **kw):
    objs, triples, vecs = graph()
    return sampler(vecs, triples, objs=objs, generator=torch.Generator().manual_seed(seed), **kw)


def test_same_seed_same_layout_and_different_seeds_different_layouts():
    sampler = tiny_sampler().eval()
    with torch.no_grad():
        a, b, c = draw(sampler, 7), draw(sampler, 7), draw(sampler, 8)
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.mask_logits, b.mask_logits)
    free = slice(0, 3)
    assert (a.boxes[free] - c.boxes[free]).abs().amax(1).min() > 1e-3  # every free object moves
    assert (a.boxes[free, 2:] > a.boxes[free, :2]).all() and (a.boxes[free] >= 0).all() and (a.boxes[free] <= 1).all()
    # explicit noise is the generator's draw: the same layout
    noise = sampler.draw_noise(4, torch.Generator().manual_seed(7))
    with torch.no_grad():
        d = draw(sampler, 99, noise=noise)
        joint, joint_again = draw(sampler, 7, placement="joint"), draw(sampler, 7, placement="joint")
    assert torch.equal(a.boxes, d.boxes)
    assert torch.equal(joint.boxes, joint_again.boxes) and not torch.equal(joint.boxes, a.boxes)


def test_placement_takes_turns_per_graph_and_batching_does_not_change_it():
    key = torch.tensor([0.5, -1.0, 2.0, 0.0, 0.3, -0.2, 9.0])
    img = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    free = torch.tensor([True, True, True, False, True, True, False])
    assert placement_ranks(key, img, free).tolist() == [1, 0, 2, -1, 1, 0, -1]
    assert placement_ranks(key, torch.zeros(7, dtype=torch.long), free).tolist() == [3, 0, 4, -1, 2, 1, -1]
    sampler = tiny_sampler().eval()
    objs, triples, vecs = graph()
    two_objs, two_vecs = torch.cat([objs, objs]), torch.cat([vecs, vecs.flip(0)])
    two_triples = torch.cat([triples, triples + torch.tensor([4, 0, 4])])
    noise = sampler.draw_noise(8, torch.Generator().manual_seed(0))
    with torch.no_grad():
        together = sampler(two_vecs, two_triples, objs=two_objs, noise=noise,
                           obj_to_img=torch.arange(2).repeat_interleave(4))
        one_queue = sampler(two_vecs, two_triples, objs=two_objs, noise=noise)
        alone = sampler(vecs, triples, objs=objs, noise=noise[:4])
    assert torch.allclose(together.boxes, one_queue.boxes, atol=1e-6)
    assert torch.allclose(together.boxes[:4], alone.boxes, atol=1e-6)


def test_known_boxes_and_image_are_copied_bit_for_bit():
    sampler = tiny_sampler().eval()
    known = torch.tensor([False, True, False, False])
    known_boxes = torch.zeros(4, 4)
    known_boxes[1] = torch.tensor([0.123456789, 0.3333333, 0.7071067, 0.9999999])
    for seed in (0, 1):
        with torch.no_grad():
            s = draw(sampler, seed, known=known, known_boxes=known_boxes)
        assert torch.equal(s.boxes[1], known_boxes[1])
        assert torch.equal(s.boxes[3], torch.tensor([0.0, 0.0, 1.0, 1.0]))  # __image__ via objs
        assert s.known.tolist() == [False, True, False, True]
    # training mode (posterior pass and prior pass) pins them too
    objs, triples, vecs = graph()
    gt = torch.tensor([[0.1, 0.5, 0.3, 0.7], [0.6, 0.5, 0.8, 0.7], [0.0, 0.0, 1.0, 0.4], [0.0, 0.0, 1.0, 1.0]])
    s = tiny_sampler().train()(vecs, triples, known, known_boxes, gt_boxes=gt, objs=objs)
    assert torch.equal(s.boxes[1], known_boxes[1]) and torch.equal(s.prior_boxes[1], known_boxes[1])


def test_a_sampled_layout_given_back_as_boxes_is_reproduced():
    sampler = tiny_sampler().eval()
    objs, triples, vecs = graph()
    with torch.no_grad():
        drawn = draw(sampler, 5)
        again = sampler(vecs, triples, torch.ones(4, dtype=torch.bool), drawn.boxes, objs=objs,
                        generator=torch.Generator().manual_seed(123))
    assert torch.equal(again.boxes, drawn.boxes) and torch.equal(again.mask_logits, drawn.mask_logits)


def test_pinned_box_steers_its_neighbours():
    sampler = tiny_sampler().eval()
    known = torch.tensor([True, False, False, False])
    left, right = torch.zeros(4, 4), torch.zeros(4, 4)
    left[0], right[0] = torch.tensor([0.0, 0.4, 0.2, 0.6]), torch.tensor([0.8, 0.4, 1.0, 0.6])
    with torch.no_grad():
        a = draw(sampler, 0, known=known, known_boxes=left)
        b = draw(sampler, 0, known=known, known_boxes=right)
    assert not torch.equal(a.boxes[1], b.boxes[1])


def test_losses_need_a_posterior_and_vanish_where_q_equals_p():
    sampler = tiny_sampler().train()
    objs, triples, vecs = graph()
    gt = torch.tensor([[0.1, 0.5, 0.3, 0.7], [0.6, 0.5, 0.8, 0.7], [0.0, 0.0, 1.0, 0.4], [0.0, 0.0, 1.0, 1.0]])
    s = sampler(vecs, triples, gt_boxes=gt, objs=objs)
    losses = sampler.losses(s, gt, triples, NAMES, gt_masks=torch.ones(4, 4, 4), objs=objs)
    assert set(losses) == {"box", "layout_kl", "layout_prior", "layout_relation", "mask"}
    assert all(torch.isfinite(v) and v >= 0 for v in losses.values())
    losses["layout_relation"].backward(retain_graph=True)  # the relation loss trains the prior ...
    assert sampler.prior_net[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0  # ... not the decoder
               for m in (sampler.decoder_in, sampler.decoder_gconv, sampler.head) for p in m.parameters())
    sampler.zero_grad()
    losses["layout_kl"].backward(retain_graph=True)  # ... the posterior's KL side leaves it alone
    assert sampler.prior_net[0].weight.grad is None or sampler.prior_net[0].weight.grad.abs().sum() == 0
    assert sampler.posterior_net[0].weight.grad.abs().sum() > 0
    sampler.zero_grad()
    losses["layout_prior"].backward()  # ... and the prior's side leaves the posterior alone
    assert sampler.prior_net[0].weight.grad.abs().sum() > 0
    assert sampler.posterior_net[0].weight.grad is None or sampler.posterior_net[0].weight.grad.abs().sum() == 0
    with pytest.raises(ConfigError, match="call forward with gt_boxes"):
        sampler.losses(draw(sampler.eval(), 0), gt, triples, NAMES)


def test_bad_inputs_name_what_is_wrong():
    sampler = tiny_sampler()
    objs, triples, vecs = graph()
    with pytest.raises(GraphError, match=r"object vectors must be \(O, 16\)"):
        sampler(vecs[:, :8], triples)
    with pytest.raises(GraphError, match="triple 0 names an object outside 0..3"):
        sampler(vecs, torch.tensor([[0, 1, 4]]))
    with pytest.raises(GraphError, match="triple 0 has predicate 7"):
        sampler(vecs, torch.tensor([[0, 7, 1]]))
    with pytest.raises(GraphError, match=r"known_boxes must have shape \(4, 4\)"):
        sampler(vecs, triples, torch.zeros(4, dtype=torch.bool), torch.zeros(3, 4))
    with pytest.raises(ConfigError, match="layout.z_dim: must be positive"):
        LayoutSampler(WIDTH, 7, z_dim=0)


def test_sample_known_mask_is_seeded_and_bounded():
    obj_to_img = torch.arange(200).repeat_interleave(10)
    a = sample_known_mask(obj_to_img, 0.5, torch.Generator().manual_seed(0))
    b = sample_known_mask(obj_to_img, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and 0.15 < a.float().mean() < 0.35  # E = 0.25
    assert not sample_known_mask(obj_to_img, 0.0).any()
    with pytest.raises(ConfigError, match="max_fraction must be in"):
        sample_known_mask(obj_to_img, 1.5)


def test_hinge_is_zero_exactly_where_the_relation_holds():
    rng = random.Random(0)
    pairs = []
    for _ in range(400):
        for _ in range(2):
            x0, y0 = rng.uniform(0, 0.8), rng.uniform(0, 0.8)
            pairs.append([x0, y0, x0 + rng.uniform(0.02, 1 - x0), y0 + rng.uniform(0.02, 1 - y0)])
    boxes = torch.tensor(pairs, dtype=torch.float64)
    for name in GEOMETRIC_KINDS:
        triples = torch.tensor([[2 * i, PRED[name], 2 * i + 1] for i in range(400)])
        zero = (relation_hinge(boxes, triples, NAMES, margin=0.0) == 0).tolist()
        holds = [relation_holds(name, pairs[2 * i], pairs[2 * i + 1]) for i in range(400)]
        assert zero == holds and 0 < sum(holds) < 400, name
        wider = relation_hinge(boxes, triples, NAMES, margin=0.05)
        assert (wider >= relation_hinge(boxes, triples, NAMES, margin=0.0)).all()
    # non-geometric predicates cost nothing
    assert float(relation_hinge(torch.rand(2, 4), torch.tensor([[0, 0, 1]]), NAMES).sum()) == 0.0


def test_refine_boxes_repairs_violations_and_keeps_fixed_boxes():
    boxes = torch.tensor([[0.7, 0.4, 0.9, 0.6],    # 0: should be left of 1, sits right of it
                          [0.1, 0.4, 0.3, 0.6],    # 1: pinned
                          [0.3, 0.7, 0.5, 0.9],    # 2: should be above 1, sits below it
                          [0.4, 0.4, 0.6, 0.6],    # 3: should be inside 4, is not
                          [0.2, 0.2, 0.5, 0.5],    # 4
                          [0.0, 0.0, 1.0, 1.0]])   # 5: __image__
    triples = torch.tensor([[0, PRED["left of"], 1], [2, PRED["above"], 1], [3, PRED["inside"], 4],
                            [0, 0, 5], [1, 0, 5]])
    fixed = torch.tensor([False, True, False, False, False, True])
    named = [(s, NAMES[p], o) for s, p, o in triples.tolist()]
    assert relation_satisfaction(boxes, named) == (0, 3)
    out = refine_boxes(boxes, triples, NAMES, fixed=fixed)
    assert relation_satisfaction(out, named) == (3, 3)
    assert torch.equal(out[fixed], boxes[fixed])
    assert (out >= 0).all() and (out <= 1).all() and ((out[:, 2:] - out[:, :2]) >= 0.02 - 1e-6).all()
    # judged on mask centroids: a mask filling only the box's left column moves the centroid left
    masks = torch.zeros(6, 4, 4)
    masks[:, :, 0] = 1
    frac_out = refine_boxes(boxes, triples, NAMES, fixed=fixed, mask_probs=masks)
    assert torch.equal(frac_out[fixed], boxes[fixed])
    with pytest.raises(GraphError, match=r"fixed must have shape \(6,\)"):
        refine_boxes(boxes, triples, NAMES, fixed=fixed[:3])


def test_refine_boxes_moves_piled_things_apart_without_resizing_or_breaking_relations():
    boxes = torch.tensor([[0.30, 0.30, 0.60, 0.60],    # 0: left of 1, but nearly on top of it
                          [0.35, 0.32, 0.65, 0.62],    # 1
                          [0.40, 0.40, 0.55, 0.55],    # 2: pinned, on top of both
                          [0.0, 0.0, 1.0, 1.0]])       # 3: __image__
    triples = torch.tensor([[0, PRED["left of"], 1], [0, 0, 3], [1, 0, 3], [2, 0, 3]])
    fixed = torch.tensor([False, False, True, True])
    apart = torch.tensor([[0, 1], [0, 2], [1, 2]])
    before = pairwise_iou(boxes, apart)
    assert before[0] > 0.6
    plain = refine_boxes(boxes, triples, NAMES, fixed=fixed)
    out = refine_boxes(boxes, triples, NAMES, fixed=fixed, apart=apart, max_iou=0.1)
    after = pairwise_iou(out, apart)
    assert (after <= 0.1 + 0.02).all() and after.sum() < pairwise_iou(plain, apart).sum()
    sizes = lambda b: b[:, 2:] - b[:, :2]  # noqa: E731
    assert torch.allclose(sizes(out), sizes(boxes), atol=1e-6)  # moved, not shrunk
    assert torch.equal(out[fixed], boxes[fixed])
    named = [(s, NAMES[p], o) for s, p, o in triples.tolist()]
    assert relation_satisfaction(out, named) == (1, 1)
    # max_iou 1 (the default) leaves overlap alone: the same boxes as without pairs
    assert torch.equal(refine_boxes(boxes, triples, NAMES, fixed=fixed, apart=apart, max_iou=1.0), plain)
    with pytest.raises(GraphError, match=r"apart must have shape \(P, 2\), got \(3,\)"):
        refine_boxes(boxes, triples, NAMES, apart=apart[:, 0])


def test_thing_pairs_are_things_of_one_image_not_nested():
    star, circle, sky = VOCAB.object_index("star"), VOCAB.object_index("circle"), VOCAB.object_index("sky")
    objs = torch.tensor([star, circle, sky, 0, circle, star, circle, 0])
    obj_to_img = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    triples = torch.tensor([[5, PRED["inside"], 6], [4, PRED["left of"], 5]])
    pairs = thing_pairs(objs, obj_to_img, triples, NAMES, VOCAB.num_things)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (4, 5), (4, 6)]  # not sky, __image__, 5-6 (nested), 0-4
    assert thing_pairs(objs, obj_to_img, triples, NAMES, None).shape == (0, 2)


def test_project_boxes_keeps_size_and_shifts_inside():
    out = project_boxes(torch.tensor([[0.9, -0.1, 1.2, 0.2], [0.5, 0.5, 0.5, 0.5]]), min_size=0.1)
    assert out.flatten().tolist() == pytest.approx([0.7, 0.0, 1.0, 0.3, 0.45, 0.45, 0.55, 0.55])


def synthetic_graphs(n: int, seed: int):
    """Two things (circle, square) with random boxes and their sg2im relation, plus __image__."""
    rng = random.Random(seed)
    graphs = []
    for _ in range(n):
        boxes = []
        for _ in range(2):
            w, h = rng.uniform(0.15, 0.3), rng.uniform(0.15, 0.3)
            x0, y0 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            boxes.append([x0, y0, x0 + w, y0 + h])
        graphs.append((boxes, PRED[geometric_relation(boxes[0], boxes[1])]))
    return graphs


def pack(graphs):
    objs, triples, boxes = [], [], []
    for i, (bx, p) in enumerate(graphs):
        base = 3 * i
        objs += [1, 2, 0]
        triples += [[base, p, base + 1], [base, 0, base + 2], [base + 1, 0, base + 2]]
        boxes += bx + [[0.0, 0.0, 1.0, 1.0]]
    return torch.tensor(objs), torch.tensor(triples), torch.tensor(boxes)


def satisfaction(encoder, layout_net, graphs, seeds=3) -> float:
    """Share of the graphs' relations kept over ``seeds`` draws (one for the regression)."""
    objs, triples, _ = pack(graphs)
    named = [(s, NAMES[p], o) for s, p, o in triples.tolist()]
    encoder.eval(), layout_net.eval()
    hits = total = 0
    with torch.no_grad():
        vecs = encoder(objs, triples)
        for seed in range(seeds if isinstance(layout_net, LayoutSampler) else 1):
            if isinstance(layout_net, LayoutSampler):
                boxes = layout_net(vecs, triples, objs=objs, generator=torch.Generator().manual_seed(seed)).boxes
            else:
                boxes, _ = layout_net(vecs)
            s, c = relation_satisfaction(boxes, named)
            hits, total = hits + s, total + c
    return hits / total


def train_briefly(layout_net, steps: int = 30):
    """``steps`` Adam steps of a fresh graph encoder and ``layout_net`` on synthetic graphs."""
    torch.manual_seed(0)
    encoder = GraphEncoder(VOCAB.num_objects, VOCAB.num_predicates, embed_dim=16, width=WIDTH, hidden=32, layers=1)
    train = synthetic_graphs(256, seed=0)
    opt = torch.optim.Adam(list(encoder.parameters()) + list(layout_net.parameters()), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    encoder.train(), layout_net.train()
    for step in range(steps):
        objs, triples, boxes = pack(train[(step % 16) * 16:(step % 16 + 1) * 16])
        vecs = encoder(objs, triples)
        if isinstance(layout_net, LayoutSampler):
            known = sample_known_mask(torch.arange(16).repeat_interleave(3), 0.3, gen)
            s = layout_net(vecs, triples, known, boxes, gt_boxes=boxes, objs=objs, generator=gen)
            loss = sum(layout_net.losses(s, boxes, triples, NAMES, objs=objs, beta=0.001).values())
        else:
            loss = box_loss(layout_net(vecs)[0], boxes, objs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return encoder


def test_a_briefly_trained_sampler_keeps_relations_better_than_regression():
    held_out = synthetic_graphs(64, seed=1)
    torch.manual_seed(0)
    untrained = satisfaction(GraphEncoder(VOCAB.num_objects, VOCAB.num_predicates, embed_dim=16, width=WIDTH,
                                          hidden=32, layers=1), tiny_sampler(), held_out)
    sampler = tiny_sampler()
    trained = satisfaction(train_briefly(sampler), sampler, held_out)
    torch.manual_seed(0)
    regression = LayoutPredictor(WIDTH, mask_size=4, box_hidden=16, mask_channels=4)
    baseline = satisfaction(train_briefly(regression), regression, held_out)
    assert trained >= 0.9 and trained > untrained + 0.3 and trained > baseline, (untrained, trained, baseline)
