"""Scene-graph checks: every problem in sg2im or node-link data as one line naming where it is.

Validation collects every problem, one line each, naming the file, the graph index and the object
or relation index, so a user can fix a file in one pass. Self-referencing relations ("A next to A")
are warnings unless ``strict``: sg2im's own published ``figure_5_vg.json`` contains them. The
checks return plain sg2im dicts (node-link and networkx data are converted to that form first);
:mod:`layout2img.graph` turns them into ``SceneGraph`` objects.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, GraphError
from .io import read_json
from .vocab import IMAGE_OBJECT, IN_IMAGE, Vocab, suggest_name

#: The largest number of objects a graph may have unless the caller says otherwise.
DEFAULT_MAX_OBJECTS = 32

SG2IM_KEYS = ("objects", "relationships", "descriptions", "boxes", "caption")
NODE_LINK_KEYS = ("directed", "multigraph", "graph", "nodes", "edges", "links")


# -- small helpers for messages --------------------------------------------------------------
def json_kind(value: Any) -> str:
    """The JSON name of a value's type, as a user who wrote the file would call it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def format_json(value: Any, indent: int = 0) -> str:
    """JSON with a list of scalars on one line (a relation, a box), other containers indented."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(value, dict) and value:
        body = ",\n".join(f"{inner}{json.dumps(k, ensure_ascii=False)}: {format_json(v, indent + 1)}"
                          for k, v in value.items())
        return "{\n" + body + "\n" + pad + "}"
    if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
        body = ",\n".join(inner + format_json(v, indent + 1) for v in value)
        return "[\n" + body + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


def show_json(value: Any, limit: int = 40) -> str:
    """A value as it looks in JSON, shortened."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plural(n: int, word: str) -> str:
    """'1 object', '2 objects'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_max_objects(max_objects: int | None) -> None:
    if max_objects is not None and (isinstance(max_objects, bool) or not isinstance(max_objects, int)
                                    or max_objects < 1):
        raise ConfigError(f"max_objects must be a positive integer, got {max_objects!r}")


class GraphReport:
    """Errors and warnings of one graph, each line prefixed with its location."""

    def __init__(self, where: str, strict: bool):
        self.where = where
        self.strict = strict
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, msg: str, at: str | None = None) -> None:
        self.errors.append(f"{self.where}: {at}: {msg}" if at else f"{self.where}: {msg}")

    def warn(self, msg: str, at: str | None = None) -> None:
        line = f"{self.where}: {at}: {msg}" if at else f"{self.where}: {msg}"
        (self.errors if self.strict else self.warnings).append(line)


# -- checking one graph in sg2im form ----------------------------------------------------------
def box_problem(box: Any) -> str | None:
    """Why ``box`` is not a valid normalised box, or None."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return f"box must be [x0, y0, x1, y1], got {show_json(box)}"
    for v in box:
        if not _is_number(v):
            return f"box {show_json(box)} has a non-numeric value {show_json(v)}"
        if isinstance(v, float) and not math.isfinite(v):  # ints are finite (and may overflow a float)
            return f"box {show_json(box)} has a value that is not finite"
    x0, y0, x1, y1 = box
    if min(box) < 0 or max(box) > 1:
        return f"box {show_json(box)} is outside [0, 1] (boxes are normalised to the image size)"
    if x0 >= x1 or y0 >= y1:
        return f"box {show_json(box)} is inverted or empty (need x0 < x1 and y0 < y1)"
    return None


def index_problem(value: Any, role: str, num_objects: int | None, objects: Sequence) -> str | None:
    """Why ``value`` is not a valid object index for a relation's ``role`` ('subject'/'object'), or None."""
    if isinstance(value, bool):
        return f"{role} index {show_json(value)} is not an integer"
    if isinstance(value, str):
        hint = " (use the object's index, not its name)" if value in objects else ""
        return f"{role} index {show_json(value)} is not an integer{hint}"
    if not isinstance(value, int):
        return f"{role} index {show_json(value)} is not an integer"
    if value < 0:
        return f"{role} index {value} is negative"
    if num_objects is not None and value >= num_objects:
        return f"{role} index {value} out of range (graph has {plural(num_objects, 'object')})"
    return None


def check_sg2im(d: dict, rep: GraphReport, vocab: Vocab | None, max_objects: int | None) -> None:
    """Append every problem of the sg2im-form graph ``d`` to ``rep``."""
    for key in d:
        if key not in SG2IM_KEYS:
            rep.warn(f"unknown key {show_json(key)} ignored{suggest_name(str(key), SG2IM_KEYS)}")

    objects = d.get("objects")
    n = None
    if "objects" not in d:
        rep.error("missing 'objects' (a list of object names)")
    elif not isinstance(objects, list):
        rep.error(f"'objects' must be a list of names, got {json_kind(objects)}")
    elif not objects:
        rep.error("empty graph: 'objects' is an empty list")
    else:
        n = len(objects)
        if max_objects is not None and n > max_objects:
            rep.error(f"{n} objects, more than the limit of {max_objects}")
        for i, name in enumerate(objects):
            if not isinstance(name, str):
                rep.error(f"expected a name (string), got {json_kind(name)} {show_json(name)}", f"object {i}")
            elif not name.strip():
                rep.error("empty name", f"object {i}")
            elif name == IMAGE_OBJECT:
                rep.error(f"{IMAGE_OBJECT!r} is added by layout2img; remove it", f"object {i}")
            elif vocab is not None and not vocab.has_object(name):
                rep.error(f"unknown object {name!r} in vocabulary {vocab.name!r}{vocab.suggest_object(name)}",
                          f"object {i}")
    names = objects if isinstance(objects, list) else []

    rels = d.get("relationships", [])
    if not isinstance(rels, list):
        rep.error(f"'relationships' must be a list of [subject, predicate, object], got {json_kind(rels)}")
        rels = []
    for j, rel in enumerate(rels):
        at = f"relation {j}"
        if not isinstance(rel, (list, tuple)):
            rep.error(f"expected [subject, predicate, object], got {json_kind(rel)} {show_json(rel)}", at)
            continue
        if len(rel) != 3:
            rep.error(f"expected 3 items [subject, predicate, object], got {len(rel)}: {show_json(rel)}", at)
            continue
        s, p, o = rel
        bad = [m for m in (index_problem(s, "subject", n, names), index_problem(o, "object", n, names)) if m]
        for m in bad:
            rep.error(m, at)
        if not isinstance(p, str):
            rep.error(f"predicate must be a string, got {json_kind(p)} {show_json(p)}", at)
        elif p == IN_IMAGE:
            rep.error(f"{IN_IMAGE!r} is added by layout2img; remove this relation", at)
        elif not p.strip():
            rep.error("empty predicate", at)
        elif vocab is not None and not vocab.has_predicate(p):
            rep.error(f"unknown predicate {p!r} in vocabulary {vocab.name!r}{vocab.suggest_predicate(p)}", at)
        if not bad and s == o:
            rep.warn(f"subject and object are the same object ({s}): a relation needs two objects", at)

    descriptions = d.get("descriptions")
    if descriptions is not None:
        if not isinstance(descriptions, list):
            rep.error("'descriptions' must be a list of texts (or null), one per object, "
                      f"got {json_kind(descriptions)}")
        else:
            if n is not None and len(descriptions) != n:
                rep.error(f"'descriptions' has {len(descriptions)} entries, expected one per object ({n})")
            for i, text in enumerate(descriptions):
                if text is not None and not isinstance(text, str):
                    rep.error(f"description must be a string or null, got {json_kind(text)} {show_json(text)}",
                              f"object {i}")

    boxes = d.get("boxes")
    if boxes is not None:
        if not isinstance(boxes, list):
            rep.error(f"'boxes' must be a list of [x0, y0, x1, y1], one per object, got {json_kind(boxes)}")
        else:
            if n is not None and len(boxes) != n:
                rep.error(f"'boxes' has {len(boxes)} entries, expected one per object ({n})")
            for i, box in enumerate(boxes):
                if box is None:
                    rep.error("no box (give a box for every object or for none)", f"object {i}")
                elif (why := box_problem(box)) is not None:
                    rep.error(why, f"object {i}")

    caption = d.get("caption")
    if caption is not None and not isinstance(caption, str):
        rep.error(f"'caption' must be a string, got {json_kind(caption)}")


def node_link_to_sg2im(d: dict, rep: GraphReport) -> dict | None:
    """Convert node-link data to the sg2im form; object i is node i, relation j is edge j."""
    nodes = d.get("nodes")
    if not isinstance(nodes, list):
        rep.error(f"node-link 'nodes' must be a list, got {json_kind(nodes)}")
        return None
    edges = d.get("edges", d.get("links", []))
    if not isinstance(edges, list):
        rep.error(f"node-link 'edges' must be a list, got {json_kind(edges)}")
        return None
    before = len(rep.errors)
    ids: dict = {}
    objects, descriptions, boxes = [], [], []
    for i, node in enumerate(nodes):
        at = f"object {i}"
        if not isinstance(node, dict):
            rep.error(f"node must be a JSON object with 'id' and 'name', got {json_kind(node)}", at)
            continue
        if "id" not in node:
            rep.error("node has no 'id'", at)
        elif not isinstance(node["id"], (str, int)) or isinstance(node["id"], bool):
            rep.error(f"node id must be a string or an integer, got {json_kind(node['id'])}", at)
        elif node["id"] in ids:
            rep.error(f"node id {show_json(node['id'])} appears twice (also object {ids[node['id']]})", at)
        else:
            ids[node["id"]] = i
        if "name" not in node:
            rep.error("node has no 'name'", at)
        objects.append(node.get("name"))
        descriptions.append(node.get("description"))
        boxes.append(node.get("box"))
    rels = []
    for j, edge in enumerate(edges):
        at = f"relation {j}"
        if not isinstance(edge, dict):
            rep.error(f"edge must be a JSON object with 'source', 'target' and 'predicate', "
                      f"got {json_kind(edge)}", at)
            continue
        ends = []
        for end in ("source", "target"):
            if end not in edge:
                rep.error(f"edge has no {end!r}", at)
            elif not isinstance(edge[end], (str, int)) or isinstance(edge[end], bool) or edge[end] not in ids:
                rep.error(f"{end} {show_json(edge[end])} is not a node id", at)
            else:
                ends.append(ids[edge[end]])
        if "predicate" not in edge:
            rep.error("edge has no 'predicate'", at)
        if len(ends) == 2:
            rels.append([ends[0], edge.get("predicate"), ends[1]])
    attrs = d.get("graph", {})
    if not isinstance(attrs, dict):
        rep.error(f"node-link 'graph' must be a JSON object, got {json_kind(attrs)}")
        attrs = {}
    if len(rep.errors) > before:
        return None
    out: dict = {"objects": objects, "relationships": rels}
    if any(t is not None for t in descriptions):
        out["descriptions"] = descriptions
    if any(b is not None for b in boxes):
        out["boxes"] = boxes
    if attrs.get("caption") is not None:
        out["caption"] = attrs["caption"]
    return out


def networkx_to_sg2im(graph) -> dict:
    """The sg2im dict of a networkx digraph whose nodes have ``name`` (optional ``description``,
    ``box``) and edges ``predicate``; object i is the i-th node. Not checked."""
    order = {node: i for i, node in enumerate(graph.nodes)}
    if graph.is_multigraph():
        edges = list(graph.edges(keys=True, data="predicate"))
        try:  # our own graphs: keys give the order the relations were added in
            edges.sort(key=lambda e: e[2])
        except TypeError:
            pass
        edges = [(s, o, p) for s, o, _, p in edges]
    else:
        edges = list(graph.edges(data="predicate"))
    d: dict = {"objects": [graph.nodes[v].get("name") for v in graph.nodes],
               "relationships": [[order[s], p, order[o]] for s, o, p in edges]}
    descriptions = [graph.nodes[v].get("description") for v in graph.nodes]
    boxes = [graph.nodes[v].get("box") for v in graph.nodes]
    if any(t is not None for t in descriptions):
        d["descriptions"] = descriptions
    if any(b is not None for b in boxes):
        d["boxes"] = boxes
    if graph.graph.get("caption") is not None:
        d["caption"] = graph.graph["caption"]
    return d


def is_node_link(d: dict) -> bool:
    """Whether ``d`` is node-link data rather than an sg2im graph."""
    return "nodes" in d and "objects" not in d


def check_graph_data(data: Any, source: str, index: int, vocab: Vocab | None, max_objects: int | None,
                     strict: bool) -> tuple[dict | None, list[str], list[str]]:
    """Check one graph (either form): ``(sg2im dict or None when it has errors, errors, warnings)``."""
    rep = GraphReport(f"{source}: graph {index}", strict)
    if not isinstance(data, dict):
        rep.error("expected a scene graph (JSON object with 'objects' and 'relationships'), "
                  f"got {json_kind(data)}")
        return None, rep.errors, rep.warnings
    if is_node_link(data):
        unknown = [k for k in data if k not in NODE_LINK_KEYS]
        for k in unknown:
            rep.warn(f"unknown node-link key {show_json(k)} ignored")
        data = node_link_to_sg2im(data, rep)
        if data is None:
            return None, rep.errors, rep.warnings
    check_sg2im(data, rep, vocab, max_objects)
    if rep.errors:
        return None, rep.errors, rep.warnings
    return data, rep.errors, rep.warnings


def check_data(data: Any, vocab: Vocab | None, max_objects: int | None, *, source: str, strict: bool,
               warnings: list[str] | None) -> tuple[list[tuple[int, dict]], list[str]]:
    """Check parsed JSON (one graph, a list, or node-link data): ``([(index, sg2im dict)] of the valid
    graphs, error lines)``; warnings go to ``warnings`` when given."""
    check_max_objects(max_objects)
    if isinstance(data, dict):
        items = [data]
    elif isinstance(data, list):
        if not data:
            return [], [f"{source}: no scene graphs (the list is empty)"]
        items = data
    else:
        return [], [f"{source}: expected a scene graph (JSON object) or a list of scene graphs "
                    f"at the top level, got {json_kind(data)}"]
    valid, errors = [], []
    for i, item in enumerate(items):
        checked, errs, warns = check_graph_data(item, source, i, vocab, max_objects, strict)
        errors.extend(errs)
        if warnings is not None:
            warnings.extend(warns)
        if checked is not None:
            valid.append((i, checked))
    return valid, errors


def check_file(path: str | Path, vocab: Vocab | None, max_objects: int | None, *, strict: bool,
               warnings: list[str] | None) -> tuple[list[tuple[int, dict]], list[str]]:
    """:func:`check_data` for a JSON file; a file that cannot be read is one error line, not an exception."""
    check_max_objects(max_objects)
    try:
        data = read_json(path, "scene-graph file", GraphError)
    except GraphError as e:
        return [], [str(e)]
    return check_data(data, vocab, max_objects, source=str(path), strict=strict, warnings=warnings)


def first_error(errors: list[str]) -> GraphError:
    """The error to raise for a graph with ``errors``: the first line, and how many more there are."""
    more = f" (and {plural(len(errors) - 1, 'more error')})" if len(errors) > 1 else ""
    return GraphError(errors[0] + more)
