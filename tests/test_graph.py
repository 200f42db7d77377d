"""SceneGraph: reading and writing every form, the builder, and the model's item."""
import json
from pathlib import Path

import networkx as nx
import pytest
import torch

from layout2img import Layout2ImgError, SceneGraph, Vocab
from layout2img.data.batch import collate
from layout2img.errors import GraphError, VocabError
from layout2img.graph import DEFAULT_MAX_OBJECTS, validate_data, validate_file, write_graphs

FIXTURES = Path(__file__).parent / "fixtures" / "graphs"

FULL = {
    "objects": ["sky", "grass", "circle", "square"],
    "relationships": [[0, "above", 1], [2, "left of", 3], [2, "left of", 3], [2, "above", 1]],
    "descriptions": [None, "green grass", "a small red circle", None],
    "boxes": [[0.0, 0.0, 1.0, 0.5], [0.0, 0.5, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4], [0.5, 0.4, 0.9, 0.8]],
    "caption": "a red circle left of a square",
}
PLAIN = {"objects": ["star", "sand"], "relationships": [[0, "inside", 1]]}


def test_public_names():
    assert issubclass(GraphError, Layout2ImgError)
    assert DEFAULT_MAX_OBJECTS == 32
    assert isinstance(SceneGraph().nx, nx.DiGraph)  # a MultiDiGraph is a DiGraph


def test_dict_round_trip_keeps_order_duplicates_and_optional_fields():
    g = SceneGraph.from_dict(FULL, Vocab.shapes())
    assert g.objects == FULL["objects"]
    assert g.relationships == FULL["relationships"]  # the repeated triple is kept, in order
    assert g.descriptions == FULL["descriptions"]
    assert g.boxes == FULL["boxes"]
    assert g.caption == FULL["caption"]
    assert g.to_dict() == FULL
    assert g.nx.number_of_edges(2, 3) == 2
    assert [g.nx.nodes[i]["name"] for i in range(4)] == FULL["objects"]
    assert g.nx.nodes[2]["box"] == [0.1, 0.2, 0.3, 0.4] and g.nx.graph["caption"] == FULL["caption"]


def test_optional_fields_only_when_present():
    g = SceneGraph.from_dict(PLAIN)
    assert g.to_dict() == PLAIN  # no descriptions/boxes/caption keys
    assert g.boxes is None and g.caption is None and g.descriptions == [None, None]
    assert g.summary() == "2 objects, 1 relation"
    assert SceneGraph.from_dict(FULL).summary() == "4 objects, 4 relations, boxes, descriptions, caption"


def test_from_dict_raises_the_first_error_with_its_location():
    bad = dict(PLAIN, objects=["star", "snad"], relationships=[[0, "inside", 4]])
    with pytest.raises(GraphError) as e:
        SceneGraph.from_dict(bad, Vocab.shapes(), source="mine.json", index=3)
    msg = str(e.value)
    assert msg.startswith("mine.json: graph 3: object 1: unknown object 'snad'")
    assert "did you mean 'sand'?" in msg and msg.endswith("(and 1 more error)")
    # Without a vocabulary only the structure is checked.
    assert SceneGraph.from_dict(dict(PLAIN, objects=["star", "snad"])).objects == ["star", "snad"]


def test_sg2im_json_file_one_graph_and_list(tmp_path):
    one = tmp_path / "one.json"
    SceneGraph.from_dict(FULL).write(one)
    assert json.loads(one.read_text()) == FULL  # a single object, not a list
    [g] = SceneGraph.read(one, Vocab.shapes())
    assert g.to_dict() == FULL and (g.source, g.index) == (str(one), 0)

    many = tmp_path / "many.json"
    write_graphs(many, [SceneGraph.from_dict(PLAIN), SceneGraph.from_dict(FULL)])
    data = json.loads(many.read_text())
    assert data == [PLAIN, FULL]
    assert '[0, "inside", 1]' in many.read_text()  # a relation is written on one line
    graphs = SceneGraph.read(many, Vocab.shapes())
    assert [gr.to_dict() for gr in graphs] == [PLAIN, FULL]
    assert [gr.index for gr in graphs] == [0, 1]


def test_node_link_round_trip_and_networkx_compatibility(tmp_path):
    g = SceneGraph.from_dict(FULL)
    d = g.to_node_link()
    assert d["directed"] and d["multigraph"] and d["graph"] == {"caption": FULL["caption"]}
    assert d["nodes"][1] == {"id": 1, "name": "grass", "description": "green grass", "box": [0.0, 0.5, 1.0, 1.0]}
    assert d["edges"][1] == {"source": 2, "target": 3, "key": 1, "predicate": "left of"}
    assert SceneGraph.from_node_link(d).to_dict() == FULL

    # networkx reads what we write, and we read what networkx writes
    G = nx.node_link_graph(d, edges="edges")
    assert G.number_of_edges() == 4 and G.nodes[2]["name"] == "circle"
    theirs = nx.node_link_data(G, edges="links")
    assert "links" in theirs
    assert SceneGraph.from_node_link(theirs).to_dict() == FULL
    assert SceneGraph.from_networkx(g.to_networkx()).to_dict() == FULL

    path = tmp_path / "nl.json"
    g.write(path, node_link=True)
    assert "nodes" in json.loads(path.read_text())
    [back] = SceneGraph.read(path, Vocab.shapes())
    assert back.to_dict() == FULL


def test_node_link_fixture_with_string_ids_and_links_key():
    [g] = SceneGraph.read(FIXTURES / "shapes_node_link.json", Vocab.shapes())
    assert g.objects == ["sand", "star", "star"]
    assert g.relationships == [[1, "left of", 2], [1, "left of", 2], [2, "inside", 0]]
    assert g.descriptions == [None, "a yellow star", None]
    assert g.caption == "two stars on the sand"


def test_from_networkx_plain_digraph():
    G = nx.DiGraph(caption="hi")
    G.add_node("a", name="sky")
    G.add_node("b", name="grass", box=[0, 0.5, 1, 1])
    G.add_node("c", name="circle", box=[0.2, 0.2, 0.4, 0.4])
    G.add_node("d", name="sky", box=[0, 0, 1, 0.5])  # order of nodes gives object indices
    G.add_edge("d", "b", predicate="above")
    with pytest.raises(GraphError, match="graph 0: object 0: no box"):
        SceneGraph.from_networkx(G)
    G.nodes["a"]["box"] = [0, 0, 1, 0.4]
    g = SceneGraph.from_networkx(G, Vocab.shapes())
    assert g.objects == ["sky", "grass", "circle", "sky"] and g.relationships == [[3, "above", 1]]
    assert g.caption == "hi"


def test_builder_api():
    g = SceneGraph(caption="sheep by the sea")
    sea = g.add_object("sea", box=[0, 0.5, 1, 1])
    s = g.add_object("circle", description="a fluffy white sheep", box=torch.tensor([0.1, 0.2, 0.3, 0.45]))
    assert (sea, s) == (0, 1)
    assert g.add_relation(s, "above", sea) == 0
    assert g.add_relation(s, "above", sea) == 1
    assert g.relationships == [[1, "above", 0], [1, "above", 0]]
    assert g.boxes == [[0.0, 0.5, 1.0, 1.0], pytest.approx([0.1, 0.2, 0.3, 0.45])]
    assert g.validate(Vocab.shapes()) == []

    g.remove_relation(0)
    assert g.relationships == [[1, "above", 0]]
    t = g.add_object("star")
    g.add_relation(t, "right of", s)
    assert g.boxes[2] is None
    assert g.validate(Vocab.shapes()) == [
        "<graph>: graph 0: object 2: no box (give a box for every object or for none)"]
    g.set_box(t, [0.6, 0.1, 0.8, 0.3])
    g.remove_object(0)  # the sea and its relation go; later objects move down
    assert g.objects == ["circle", "star"] and g.relationships == [[1, "right of", 0]]
    assert list(g.nx.nodes) == [0, 1]
    assert g.descriptions == ["a fluffy white sheep", None]
    h = g.copy()
    h.set_description(0, "changed")
    assert g.descriptions[0] == "a fluffy white sheep" and h != g


@pytest.mark.parametrize("call, words", [
    (lambda g: g.add_object(""), "object 2: expected a non-empty name"),
    (lambda g: g.add_object("__image__"), "'__image__' is added by layout2img"),
    (lambda g: g.add_object("star", box=[0.5, 0, 0.4, 1]), "object 2: box [0.5, 0, 0.4, 1] is inverted"),
    (lambda g: g.add_relation(0, "above", 2), "relation 0: object index 2 out of range (graph has 2 objects)"),
    (lambda g: g.add_relation(True, "above", 1), "relation 0: subject index true is not an integer"),
    (lambda g: g.add_relation(0, "__in_image__", 1), "'__in_image__' is added by layout2img"),
    (lambda g: g.set_box(5, [0, 0, 1, 1]), "object 5: no such object"),
    (lambda g: g.remove_relation(0), "relation 0: no such relation"),
])
def test_builder_rejects_bad_input(call, words):
    g = SceneGraph(["star", "sand"])
    with pytest.raises(GraphError) as e:
        call(g)
    assert words in str(e.value)
    assert g.num_objects == 2 and g.num_relations == 0  # nothing half-added


def test_to_item_adds_image_node_and_in_image_triples():
    vocab = Vocab.shapes()
    g = SceneGraph.from_dict(FULL)
    item = g.to_item(vocab)
    o = vocab.object_index
    assert item["objs"].dtype == torch.long
    assert item["objs"].tolist() == [o("sky"), o("grass"), o("circle"), o("square"), 0]
    p = vocab.predicate_index
    assert item["triples"].tolist() == [
        [0, p("above"), 1], [2, p("left of"), 3], [2, p("left of"), 3], [2, p("above"), 1],
        [0, 0, 4], [1, 0, 4], [2, 0, 4], [3, 0, 4],
    ]
    assert item["boxes"].shape == (5, 4) and item["boxes"].dtype == torch.float32
    assert item["boxes"][-1].tolist() == [0, 0, 1, 1]
    assert torch.allclose(item["boxes"][:4], torch.tensor(FULL["boxes"]))
    assert item["masks"] is None and item["image"] is None
    assert item["caption"] == FULL["caption"]
    assert item["descriptions"] == FULL["descriptions"] + [None]

    plain = SceneGraph.from_dict(PLAIN).to_item(vocab)
    assert plain["boxes"] is None and plain["caption"] is None and plain["descriptions"] == [None] * 3
    batch = collate([item, plain])
    assert batch.objs.shape == (8,) and batch.triples.shape == (8 + 3, 3)
    assert batch.boxes_known.tolist() == [True] * 5 + [False] * 3
    assert batch.triples[-1].tolist() == [6, 0, 7]  # star -> the second image's __image__


def test_to_item_checks_names_against_the_vocabulary():
    g = SceneGraph.from_dict({"objects": ["sheep", "grass"], "relationships": [[0, "standing on", 1]]})
    assert g.to_item(Vocab.visual_genome())["objs"].shape == (3,)
    with pytest.raises(GraphError, match=r"graph 0: object 0: unknown object 'sheep' in vocabulary 'shapes'"):
        g.to_item(Vocab.shapes())
    with pytest.raises(VocabError):
        g.to_item(None)


def test_validate_data_and_limits():
    graphs, errors = validate_data([PLAIN, FULL], Vocab.shapes(), max_objects=3, source="x")
    assert len(graphs) == 1 and graphs[0].objects == PLAIN["objects"]  # the valid graph is still returned
    assert errors == ["x: graph 1: 4 objects, more than the limit of 3"]
    assert validate_data(FULL, Vocab.shapes(), max_objects=None)[1] == []
    warnings = []
    graphs, errors = validate_data(dict(PLAIN, relationships=[[1, "inside", 1]]), warnings=warnings)
    assert errors == [] and len(graphs) == 1
    assert warnings == ["<data>: graph 0: relation 0: subject and object are the same object (1): "
                        "a relation needs two objects"]
    assert validate_data(dict(PLAIN, relationships=[[1, "inside", 1]]), strict=True)[1] == warnings


def test_read_errors_are_one_line(tmp_path):
    path = tmp_path / "g.json"
    path.write_text('{"objects": ["star"],\n "relationships": [[0, "inside" 1]]}')
    with pytest.raises(GraphError, match=r"g.json:2:33: malformed JSON in scene-graph file: Expecting ',' delimiter$"):
        SceneGraph.read(path)
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(PLAIN).encode())  # a UTF-8 BOM is fine
    assert SceneGraph.read(path)[0].to_dict() == PLAIN
    graphs, errors = validate_file(tmp_path)
    assert graphs == [] and errors == [f"{tmp_path}: scene-graph file is a folder, expected a JSON file"]


def test_write_is_atomic_and_refuses_invalid_graphs(tmp_path):
    path = tmp_path / "g.json"
    path.write_text("old")
    g = SceneGraph(["star", "sand"])
    g.set_box(0, [0.1, 0.1, 0.2, 0.2])  # sand has no box: not a valid file
    with pytest.raises(GraphError, match="object 1: no box"):
        g.write(path)
    with pytest.raises(GraphError, match="object 1: no box"):
        write_graphs(path, [SceneGraph.from_dict(PLAIN), g])
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.json"]  # no temp file left behind


def test_unicode_descriptions_survive(tmp_path):
    g = SceneGraph.from_dict(dict(PLAIN, descriptions=["une étoile dorée ★", None]))
    path = tmp_path / "u.json"
    g.write(path)
    assert "étoile dorée ★" in path.read_text(encoding="utf-8")
    assert SceneGraph.read(path)[0] == g
