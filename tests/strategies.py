"""Hypothesis strategies for scene graphs, valid and malformed, in the sg2im and node-link forms.

``valid_graphs()`` draws graphs the Shapes vocabulary accepts (optional boxes, descriptions,
caption; node-link form too). ``malformed_graphs()`` draws ``(reason, data)``: a valid graph broken
in one named way (``reason``, one of :data:`MUTATIONS`) that validation must reject; every reason
is certain to be an error, never only a warning. ``any_json()`` draws arbitrary JSON-like data.
Used by tests/test_properties.py and benchmarks/fuzz.py.
"""
from __future__ import annotations

import math

from hypothesis import strategies as st

from layout2img.vocab import IMAGE_OBJECT, IN_IMAGE, Vocab

VOCAB = Vocab.shapes()
OBJECTS = tuple(n for n in VOCAB.object_names if n != IMAGE_OBJECT)
PREDICATES = tuple(p for p in VOCAB.predicate_names if p != IN_IMAGE)
#: The validation limit the tests use (``validate_data``'s default).
MAX_OBJECTS = 32

names = st.sampled_from(OBJECTS)
predicates = st.sampled_from(PREDICATES)
texts = st.text(max_size=40)
unknown_names = st.text(min_size=1, max_size=20).filter(lambda s: s.strip() and s not in OBJECTS and s != IMAGE_OBJECT)
unknown_predicates = st.text(min_size=1, max_size=20).filter(
    lambda s: s.strip() and s not in PREDICATES and s != IN_IMAGE)
# numbers a JSON file can hold, from tiny to beyond float range (huge integers included)
any_number = st.one_of(st.integers(min_value=-(10**400), max_value=10**400),
                       st.floats(allow_nan=True, allow_infinity=True))
any_json = st.recursive(st.none() | st.booleans() | any_number | st.text(max_size=10),
                        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                                    max_size=5),
                        max_leaves=20)


@st.composite
def boxes(draw) -> list[float]:
    """``[x0, y0, x1, y1]`` in [0, 1] with x0 < x1 and y0 < y1 (as small as a thousandth of the image)."""
    x0, y0 = draw(st.floats(0, 0.999)), draw(st.floats(0, 0.999))
    w, h = draw(st.floats(0.001, 1)), draw(st.floats(0.001, 1))
    return [x0, y0, min(1.0, x0 + w), min(1.0, y0 + h)]


@st.composite
def sg2im_graphs(draw, min_objects: int = 1, max_objects: int = 8) -> dict:
    """A valid sg2im graph over the Shapes vocabulary (self-relations included: only warnings)."""
    n = draw(st.integers(min_objects, max_objects))
    graph: dict = {"objects": draw(st.lists(names, min_size=n, max_size=n))}
    relation = st.tuples(st.integers(0, n - 1), predicates, st.integers(0, n - 1)).map(list)
    rels = draw(st.lists(relation, max_size=2 * n))
    if rels or draw(st.booleans()):
        graph["relationships"] = rels
    if draw(st.booleans()):
        graph["boxes"] = draw(st.lists(boxes(), min_size=n, max_size=n))
    if draw(st.booleans()):
        graph["descriptions"] = draw(st.lists(st.none() | texts, min_size=n, max_size=n))
    if draw(st.booleans()):
        graph["caption"] = draw(texts)
    return graph


@st.composite
def as_node_link(draw, graph: dict) -> dict:
    """The same graph in networkx node-link form (int or string node ids, ``edges`` or ``links``)."""
    n = len(graph["objects"])
    ids = draw(st.lists(st.integers(-1000, 1000) | st.text(max_size=6), min_size=n, max_size=n,
                        unique_by=lambda v: (type(v), v)))
    nodes = []
    for i, name in enumerate(graph["objects"]):
        node = {"id": ids[i], "name": name}
        if "boxes" in graph:
            node["box"] = graph["boxes"][i]
        if graph.get("descriptions") and graph["descriptions"][i] is not None:
            node["description"] = graph["descriptions"][i]
        nodes.append(node)
    edges = [{"source": ids[s], "target": ids[o], "predicate": p} for s, p, o in graph.get("relationships", [])]
    out = {"directed": True, "multigraph": True, "graph": {}, "nodes": nodes,
           draw(st.sampled_from(["edges", "links"])): edges}
    if graph.get("caption") is not None:
        out["graph"]["caption"] = graph["caption"]
    return out


def valid_graphs(max_objects: int = 8):
    """A valid graph in either form."""
    g = sg2im_graphs(max_objects=max_objects)
    return st.one_of(g, g.flatmap(as_node_link))


# -- malformed: a valid graph broken in one named way -------------------------------------------------
def _set(graph: dict, key: str, value) -> dict:
    return {**graph, key: value}


def _object_at(draw, graph: dict, value) -> dict:
    objects = list(graph["objects"])
    objects[draw(st.integers(0, len(objects) - 1))] = value
    return _set(graph, "objects", objects)


def _relation_with(draw, graph: dict, part: int, value) -> dict:
    n = len(graph["objects"])
    rel = [draw(st.integers(0, n - 1)), draw(predicates), draw(st.integers(0, n - 1))]
    rel[part] = value
    rels = list(graph.get("relationships", []))
    rels.insert(draw(st.integers(0, len(rels))), rel)
    return _set(graph, "relationships", rels)


def _box_at(draw, graph: dict, value) -> dict:
    n = len(graph["objects"])
    bxs = list(graph.get("boxes") or draw(st.lists(boxes(), min_size=n, max_size=n)))
    bxs[draw(st.integers(0, n - 1))] = value
    return _set(graph, "boxes", bxs)


def _bad_box(draw) -> list:
    """A box that is not [x0, y0, x1, y1] in [0, 1] with x0 < x1, y0 < y1: NaN, infinite, huge,
    out of range, inverted, empty, wrong length or not numbers."""
    good = draw(boxes())
    i = draw(st.integers(0, 3))
    kind = draw(st.sampled_from(["nan", "inf", "huge", "negative", "above", "inverted", "empty", "length",
                                 "type"]))
    if kind == "nan":
        good[i] = math.nan
    elif kind == "inf":
        good[i] = draw(st.sampled_from([math.inf, -math.inf]))
    elif kind == "huge":
        good[i] = draw(st.integers(2, 10**400) | st.floats(1.0001, 1e308))
    elif kind == "negative":
        good[i] = draw(st.floats(-1e308, -1e-6) | st.integers(-(10**400), -1))
    elif kind == "above":
        good[i] = draw(st.floats(1.000001, 10))
    elif kind == "inverted":
        good = [good[2], good[1], good[0], good[3]] if good[0] < good[2] else [0.5, 0.1, 0.2, 0.9]
    elif kind == "empty":
        good[2] = good[0]
    elif kind == "length":
        good = draw(st.lists(st.floats(0, 1), max_size=8).filter(lambda b: len(b) != 4))
    else:
        good[i] = draw(st.text(max_size=3) | st.none() | st.booleans() | st.lists(st.integers(), max_size=2))
    return good


MUTATIONS = (
    "not_an_object", "no_objects_key", "objects_not_list", "objects_empty", "too_many_objects",
    "object_not_string", "object_blank", "object_unknown", "object_image_reserved",
    "relationships_not_list", "relation_not_list", "relation_wrong_length", "index_not_int", "index_negative",
    "index_out_of_range", "predicate_not_string", "predicate_unknown", "predicate_reserved",
    "boxes_not_list", "boxes_wrong_count", "box_missing", "box_bad", "descriptions_not_list",
    "descriptions_wrong_count", "description_not_string", "caption_not_string",
    "node_link_bad_nodes", "node_link_duplicate_id", "node_link_edge_to_nowhere", "node_link_node_without_name",
)


@st.composite
def malformed_graphs(draw, max_objects: int = 6) -> tuple[str, object]:
    """``(reason, data)``: one graph that validation must reject, for the reason named."""
    reason = draw(st.sampled_from(MUTATIONS))
    g = draw(sg2im_graphs(max_objects=max_objects))
    n = len(g["objects"])
    if reason == "not_an_object":
        return reason, draw(any_json.filter(lambda v: not isinstance(v, (dict, list))) |
                            st.lists(st.none() | st.integers() | st.text(max_size=4), min_size=1, max_size=4))
    if reason == "no_objects_key":
        return reason, {k: v for k, v in g.items() if k != "objects"}
    if reason == "objects_not_list":
        return reason, _set(g, "objects", draw(st.text(max_size=5) | st.integers() | st.none() | st.dictionaries(
            st.text(max_size=3), st.integers(), max_size=2)))
    if reason == "objects_empty":
        return reason, {"objects": [], "relationships": []}
    if reason == "too_many_objects":  # huge lists: far past the limit
        count = draw(st.integers(MAX_OBJECTS + 1, 5000))
        return reason, {"objects": [OBJECTS[i % len(OBJECTS)] for i in range(count)],
                        "relationships": [[i, "left of", i + 1] for i in range(min(count - 1, 5000))]}
    if reason == "object_not_string":
        return reason, _object_at(draw, g, draw(any_json.filter(lambda v: not isinstance(v, str))))
    if reason == "object_blank":
        return reason, _object_at(draw, g, draw(st.sampled_from(["", " ", "\t\n"])))
    if reason == "object_unknown":
        return reason, _object_at(draw, g, draw(unknown_names))
    if reason == "object_image_reserved":
        return reason, _object_at(draw, g, IMAGE_OBJECT)
    if reason == "relationships_not_list":
        return reason, _set(g, "relationships", draw(st.text(max_size=5) | st.integers() | st.dictionaries(
            st.text(max_size=3), st.integers(), max_size=2)))
    if reason == "relation_not_list":
        return reason, _set(g, "relationships", [draw(st.text(max_size=5) | st.integers() | st.none()
                                                      | st.dictionaries(st.text(max_size=3), st.integers()))])
    if reason == "relation_wrong_length":
        rel = draw(st.lists(st.integers(0, n - 1), max_size=6).filter(lambda r: len(r) != 3))
        return reason, _set(g, "relationships", [rel])
    if reason == "index_not_int":
        bad = draw(st.floats() | st.booleans() | st.text(max_size=5) | st.none() | st.lists(st.integers(), max_size=2))
        return reason, _relation_with(draw, g, draw(st.sampled_from([0, 2])), bad)
    if reason == "index_negative":
        return reason, _relation_with(draw, g, draw(st.sampled_from([0, 2])), draw(st.integers(-(10**400), -1)))
    if reason == "index_out_of_range":
        return reason, _relation_with(draw, g, draw(st.sampled_from([0, 2])), draw(st.integers(n, 10**400)))
    if reason == "predicate_not_string":
        return reason, _relation_with(draw, g, 1, draw(any_json.filter(lambda v: not isinstance(v, str))))
    if reason == "predicate_unknown":
        return reason, _relation_with(draw, g, 1, draw(unknown_predicates))
    if reason == "predicate_reserved":
        return reason, _relation_with(draw, g, 1, IN_IMAGE)
    if reason == "boxes_not_list":
        return reason, _set(g, "boxes", draw(st.text(max_size=5) | st.integers() | st.dictionaries(
            st.text(max_size=3), st.integers(), max_size=2)))
    if reason == "boxes_wrong_count":
        return reason, _set(g, "boxes", draw(st.lists(boxes(), max_size=n + 3).filter(lambda b: len(b) != n)))
    if reason == "box_missing":
        return reason, _box_at(draw, g, None)
    if reason == "box_bad":
        return reason, _box_at(draw, g, _bad_box(draw))
    if reason == "descriptions_not_list":
        return reason, _set(g, "descriptions", draw(st.text(max_size=5) | st.integers() | st.dictionaries(
            st.text(max_size=3), st.integers(), max_size=2)))
    if reason == "descriptions_wrong_count":
        return reason, _set(g, "descriptions", draw(st.lists(st.none() | texts, max_size=n + 3)
                                                    .filter(lambda d: len(d) != n)))
    if reason == "description_not_string":
        descs = list(g.get("descriptions") or [None] * n)
        descs[draw(st.integers(0, n - 1))] = draw(any_json.filter(lambda v: v is not None and not isinstance(v, str)))
        return reason, _set(g, "descriptions", descs)
    if reason == "caption_not_string":
        return reason, _set(g, "caption", draw(any_json.filter(lambda v: v is not None and not isinstance(v, str))))
    # node-link data broken in its own ways
    nl = draw(as_node_link(g))
    links = "edges" if "edges" in nl else "links"
    if reason == "node_link_bad_nodes":
        return reason, {**nl, "nodes": draw(st.text(max_size=5) | st.integers() | st.none()
                                            | st.lists(st.integers() | st.text(max_size=3), min_size=1, max_size=3))}
    if reason == "node_link_duplicate_id":
        nodes = nl["nodes"] + [{**nl["nodes"][0], "name": draw(names)}]
        return reason, {**nl, "nodes": nodes}
    if reason == "node_link_edge_to_nowhere":
        ids = {node["id"] for node in nl["nodes"]}
        stray = draw((st.integers() | st.text(max_size=4) | st.none() | st.booleans()).filter(lambda v: v not in ids
                                                                                              or isinstance(v, bool)))
        return reason, {**nl, links: nl[links] + [{"source": nl["nodes"][0]["id"], "target": stray,
                                                   "predicate": draw(predicates)}]}
    assert reason == "node_link_node_without_name", reason
    nodes = [dict(node) for node in nl["nodes"]]
    del nodes[draw(st.integers(0, n - 1))]["name"]
    return reason, {**nl, "nodes": nodes}
