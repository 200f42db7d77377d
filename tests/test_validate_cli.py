"""`layout2img validate` and `layout2img vocab`: exit codes and the exact words of each error."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layout2img.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "graphs"

GOOD = {"objects": ["sky", "grass", "circle"], "relationships": [[0, "above", 1], [2, "above", 1]]}


def _graph(**changes):
    g = json.loads(json.dumps(GOOD))
    g.update(changes)
    return g


# (id, file content: JSON-able value, or str/bytes written as is; extra CLI args; words the error must hold)
BAD_INPUTS = [
    ("malformed-json", '[\n  {"objects": ["sky"]\n  "relationships": []}\n]', [],
     [":3:3: malformed JSON", "Expecting ',' delimiter"]),
    ("not-utf8", b'{"objects": ["sky", "gr\xe4ss"], "relationships": []}', [],
     [":1:24: not UTF-8", "0xe4"]),
    ("empty-file", "  \n", [], ["file is empty"]),
    ("top-level-number", "42", [], ["top level", "got number"]),
    ("top-level-string", '"sky"', [], ["top level", "got string"]),
    ("empty-list", "[]", [], ["no scene graphs", "empty"]),
    ("graph-not-object", [GOOD, ["sky", "grass"]], [], ["graph 1:", "expected a scene graph", "got list"]),
    ("missing-objects", {"relationships": []}, [], ["graph 0:", "missing 'objects'"]),
    ("objects-not-list", _graph(objects="sky"), [], ["graph 0:", "'objects' must be a list", "got string"]),
    ("object-not-string", _graph(objects=["sky", 7, "circle"]), [],
     ["graph 0: object 1:", "expected a name (string)", "got number 7"]),
    ("empty-graph", _graph(objects=[], relationships=[]), [], ["graph 0:", "empty graph"]),
    ("unknown-object", [GOOD, _graph(objects=["sky", "grass", "circel"])], [],
     ["graph 1: object 2:", "unknown object 'circel'", "did you mean 'circle'?"]),
    ("unknown-predicate", _graph(relationships=[[0, "above", 1], [2, "abvoe", 1]]), [],
     ["graph 0: relation 1:", "unknown predicate 'abvoe'", "did you mean 'above'?"]),
    ("index-out-of-range", _graph(relationships=[[0, "above", 1], [2, "above", 7]]), [],
     ["graph 0: relation 1:", "object index 7 out of range", "graph has 3 objects"]),
    ("index-negative", _graph(relationships=[[-1, "above", 1]]), [],
     ["graph 0: relation 0:", "subject index -1 is negative"]),
    ("index-float", _graph(relationships=[[0, "above", 1.5]]), [],
     ["graph 0: relation 0:", "object index 1.5 is not an integer"]),
    ("index-boolean", _graph(relationships=[[True, "above", 1]]), [],
     ["graph 0: relation 0:", "subject index true is not an integer"]),
    ("index-is-a-name", _graph(relationships=[["sky", "above", 1]]), [],
     ["graph 0: relation 0:", "subject index \"sky\" is not an integer", "not its name"]),
    ("self-reference-strict", _graph(relationships=[[2, "above", 2]]), ["--strict"],
     ["graph 0: relation 0:", "same object (2)"]),
    ("triple-too-short", _graph(relationships=[[0, "above"]]), [],
     ["graph 0: relation 0:", "expected 3 items", "got 2"]),
    ("relation-not-list", _graph(relationships=[{"s": 0, "p": "above", "o": 1}]), [],
     ["graph 0: relation 0:", "expected [subject, predicate, object]", "got object"]),
    ("predicate-not-string", _graph(relationships=[[0, 3, 1]]), [],
     ["graph 0: relation 0:", "predicate must be a string", "got number"]),
    ("user-image-object", _graph(objects=["sky", "__image__", "circle"], relationships=[]), [],
     ["graph 0: object 1:", "'__image__' is added by layout2img"]),
    ("user-in-image-predicate", _graph(relationships=[[0, "__in_image__", 1]]), [],
     ["graph 0: relation 0:", "'__in_image__' is added by layout2img"]),
    ("box-non-numeric", _graph(boxes=[[0, 0, 1, 0.5], [0, 0.5, 1, "1"], [0.1, 0.1, 0.2, 0.2]]), [],
     ["graph 0: object 1:", "non-numeric value \"1\""]),
    ("box-inverted", _graph(boxes=[[0, 0, 1, 0.5], [0, 0.5, 1, 1], [0.4, 0.1, 0.2, 0.2]]), [],
     ["graph 0: object 2:", "inverted or empty", "x0 < x1"]),
    ("box-empty", _graph(boxes=[[0, 0, 1, 0.5], [0, 0.5, 1, 1], [0.2, 0.1, 0.2, 0.3]]), [],
     ["graph 0: object 2:", "inverted or empty"]),
    ("box-outside-unit", _graph(boxes=[[0, 0, 1, 0.5], [0, 0.5, 1, 1.2], [0.1, 0.1, 0.2, 0.2]]), [],
     ["graph 0: object 1:", "outside [0, 1]"]),
    ("box-wrong-length", _graph(boxes=[[0, 0, 1, 0.5], [0, 0.5, 1], [0.1, 0.1, 0.2, 0.2]]), [],
     ["graph 0: object 1:", "box must be [x0, y0, x1, y1]"]),
    ("boxes-not-one-per-object", _graph(boxes=[[0, 0, 1, 0.5], [0, 0.5, 1, 1]]), [],
     ["graph 0:", "'boxes' has 2 entries", "one per object (3)"]),
    ("descriptions-wrong-length", _graph(descriptions=["blue"]), [],
     ["graph 0:", "'descriptions' has 1 entries", "one per object (3)"]),
    ("description-not-text", _graph(descriptions=[None, None, 5]), [],
     ["graph 0: object 2:", "description must be a string or null"]),
    ("caption-not-string", _graph(caption=["a", "b"]), [], ["graph 0:", "'caption' must be a string", "got list"]),
    ("too-many-objects", _graph(objects=["circle"] * 5, relationships=[]), ["--max-objects", "4"],
     ["graph 0:", "5 objects, more than the limit of 4"]),
    ("too-many-objects-default", _graph(objects=["circle"] * 33, relationships=[]), [],
     ["graph 0:", "33 objects, more than the limit of 32"]),
    ("node-link-bad-target",
     {"directed": True, "nodes": [{"id": "a", "name": "sky"}, {"id": "b", "name": "grass"}],
      "edges": [{"source": "a", "target": "b", "predicate": "above"},
                {"source": "a", "target": "c", "predicate": "above"}]},
     [], ["graph 0: relation 1:", "target \"c\" is not a node id"]),
    ("node-link-missing-name", {"nodes": [{"id": 0, "name": "sky"}, {"id": 1}], "links": []}, [],
     ["graph 0: object 1:", "node has no 'name'"]),
]


def _write(tmp_path, content, name="graphs.json") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    return path


@pytest.mark.parametrize("content, args, words", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_exits_2_with_one_precise_line(tmp_path, capsys, content, args, words):
    path = _write(tmp_path, content)
    rc = main(["validate", str(path), "--vocab", "shapes", *args])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""  # no summary when the file is bad
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(str(path)), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in err


def test_each_kind_of_bad_input_gets_a_message_of_its_own(tmp_path, capsys):
    """The validator tells the kinds apart: no two bad inputs above get the same error line."""
    seen: dict[str, str] = {}
    for name, content, args, _ in BAD_INPUTS:
        path = _write(tmp_path, content, f"{name}.json")
        assert main(["validate", str(path), "--vocab", "shapes", *args]) == 2
        line = next(x for x in capsys.readouterr().err.splitlines() if not x.startswith("warning: "))
        message = line.removeprefix(str(path))
        assert message not in seen, f"{name} and {seen.get(message)} both give {message!r}"
        seen[message] = name


def test_every_error_in_every_graph_is_reported(tmp_path, capsys):
    bad = [
        _graph(objects=["sky", "grass", "circel"]),
        GOOD,
        _graph(relationships=[[0, "above", 9], [-2, "belwo", 1]]),
    ]
    path = _write(tmp_path, bad)
    assert main(["validate", str(path), "--vocab", "shapes"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4, lines
    assert "graph 0: object 2: unknown object 'circel'" in lines[0]
    assert "graph 2: relation 0: object index 9 out of range" in lines[1]
    assert "graph 2: relation 1: subject index -2 is negative" in lines[2]
    assert "graph 2: relation 1: unknown predicate 'belwo'" in lines[3] and "'below'" in lines[3]


def test_self_reference_is_a_warning_unless_strict(tmp_path, capsys):
    path = _write(tmp_path, _graph(relationships=[[2, "above", 2]]))
    assert main(["validate", str(path), "--vocab", "shapes"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"{path}: graph 0: 3 objects, 1 relation"
    assert err.startswith(f"warning: {path}: graph 0: relation 0:") and "same object (2)" in err
    assert main(["validate", str(path), "--vocab", "shapes", "--strict"]) == 2


def test_unknown_key_is_a_warning_with_a_suggestion(tmp_path, capsys):
    path = _write(tmp_path, _graph(captoin="a sky"))
    assert main(["validate", str(path), "--vocab", "shapes"]) == 0
    err = capsys.readouterr().err
    assert "graph 0: unknown key \"captoin\" ignored; did you mean 'caption'?" in err


def test_missing_file_and_unknown_vocab(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert main(["validate", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"{missing}: scene-graph file not found"
    good = _write(tmp_path, GOOD)
    assert main(["validate", str(good), "--vocab", "nonsense"]) == 2
    assert "unknown vocabulary 'nonsense'" in capsys.readouterr().err
    assert main(["validate", str(good), "--vocab", "shapes", "--max-objects", "0"]) == 2
    assert "max_objects must be a positive integer" in capsys.readouterr().err


def test_good_file_prints_one_summary_line_per_graph(tmp_path, capsys):
    path = _write(tmp_path, [GOOD, _graph(boxes=[[0, 0, 1, 0.5], [0, 0.5, 1, 1], [0.1, 0.1, 0.2, 0.2]],
                                          caption="a circle in the sky")])
    assert main(["validate", str(path), "--vocab", "shapes"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        f"{path}: graph 0: 3 objects, 2 relations",
        f"{path}: graph 1: 3 objects, 2 relations, boxes, caption",
    ]


@pytest.mark.parametrize("name, vocab, count", [
    ("figure_5_coco.json", "coco-stuff", 8),
    ("figure_5_vg.json", "vg", 8),
    ("figure_6_sheep.json", "vg", 7),
    ("figure_6_street.json", "vg", 7),
])
def test_sg2im_published_graphs_validate(capsys, name, vocab, count):
    path = FIXTURES / name
    assert main(["validate", str(path), "--vocab", vocab]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == count
    assert all(line.startswith(f"{path}: graph ") for line in out)


def test_sg2im_coco_graphs_fail_with_the_vg_vocab(capsys):
    assert main(["validate", str(FIXTURES / "figure_5_coco.json"), "--vocab", "vg"]) == 2
    err = capsys.readouterr().err
    assert "graph 0: object 6: unknown object 'playingfield' in vocabulary 'vg'" in err
    assert "graph 0: relation 0: unknown predicate 'left of' in vocabulary 'vg'" in err
    assert "'inside'" not in err  # a predicate both vocabularies share


def test_vocab_command_prints_names(capsys):
    assert main(["vocab", "shapes"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "# shapes: 15 objects, 7 predicates"
    assert "  0\t__image__" in lines and "  1\tcircle" in lines
    assert "  0\t__in_image__" in lines and "  1\tleft of" in lines
    assert main(["vocab", "nonsense"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown vocabulary")


def test_subprocess_has_no_traceback(tmp_path):
    path = _write(tmp_path, '{"objects": ["sky", "grass"], "relationships": [[0, "above", 5]]')
    bad_list = _write(tmp_path, [_graph(relationships=[[0, "above", 5]])], name="list.json")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for p, words in ((path, "malformed JSON"), (bad_list, "graph 0: relation 0: object index 5 out of range")):
        r = subprocess.run([sys.executable, "-m", "layout2img.cli", "validate", str(p), "--vocab", "shapes"],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 2
        assert "Traceback" not in r.stderr
        assert len(r.stderr.splitlines()) == 1 and words in r.stderr
