"""Scene graphs: the user's input, read from JSON and checked before anything else sees it.

Three forms are read and written:

* sg2im JSON: ``{"objects": ["sheep", "grass"], "relationships": [[0, "standing on", 1]]}``, plus the
  optional fields this project adds: ``"descriptions"`` (free text per object, ``null`` for none),
  ``"boxes"`` (``[x0, y0, x1, y1]`` in [0, 1], one per object) and ``"caption"``. A file holds one
  graph or a list of graphs.
* networkx node-link JSON (what ``networkx.node_link_data`` writes): node attributes ``name``,
  ``description``, ``box``; edge attribute ``predicate``; graph attribute ``caption``. Both the
  ``edges`` and the older ``links`` key are read; ``edges`` is written.
* Python dicts of either form (``SceneGraph.from_dict`` / ``to_dict``).

Validation collects every problem, one line each, naming the file, the graph index and the object
or relation index, so a user can fix a file in one pass. Self-referencing relations ("A next to A")
are warnings unless ``strict``: sg2im's own published ``figure_5_vg.json`` contains them. The
``__image__`` node and ``__in_image__`` triples are added by ``to_item``, never written by the user.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import networkx as nx

from .errors import ConfigError, GraphError, VocabError
from .vocab import IMAGE_OBJECT, IN_IMAGE, Vocab, _suggest

#: The largest number of objects a graph may have unless the caller says otherwise.
DEFAULT_MAX_OBJECTS = 32

SG2IM_KEYS = ("objects", "relationships", "descriptions", "boxes", "caption")
_NODE_LINK_KEYS = ("directed", "multigraph", "graph", "nodes", "edges", "links")


# -- small helpers for messages --------------------------------------------------------------
def _kind(value: Any) -> str:
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


def _show(value: Any, limit: int = 40) -> str:
    """A value as it looks in JSON, shortened."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_max_objects(max_objects: int | None) -> None:
    if max_objects is not None and (isinstance(max_objects, bool) or not isinstance(max_objects, int)
                                    or max_objects < 1):
        raise ConfigError(f"max_objects must be a positive integer, got {max_objects!r}")


class _Report:
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
def _check_box(box: Any) -> str | None:
    """Why ``box`` is not a valid normalised box, or None."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return f"box must be [x0, y0, x1, y1], got {_show(box)}"
    for v in box:
        if not _is_number(v):
            return f"box {_show(box)} has a non-numeric value {_show(v)}"
        if not math.isfinite(v):
            return f"box {_show(box)} has a value that is not finite"
    x0, y0, x1, y1 = box
    if min(box) < 0 or max(box) > 1:
        return f"box {_show(box)} is outside [0, 1] (boxes are normalised to the image size)"
    if x0 >= x1 or y0 >= y1:
        return f"box {_show(box)} is inverted or empty (need x0 < x1 and y0 < y1)"
    return None


def _check_index(value: Any, role: str, num_objects: int | None, objects: Sequence) -> str | None:
    if isinstance(value, bool):
        return f"{role} index {_show(value)} is not an integer"
    if isinstance(value, str):
        hint = " (use the object's index, not its name)" if value in objects else ""
        return f"{role} index {_show(value)} is not an integer{hint}"
    if not isinstance(value, int):
        return f"{role} index {_show(value)} is not an integer"
    if value < 0:
        return f"{role} index {value} is negative"
    if num_objects is not None and value >= num_objects:
        return f"{role} index {value} out of range (graph has {_plural(num_objects, 'object')})"
    return None


def _check_sg2im(d: dict, rep: _Report, vocab: Vocab | None, max_objects: int | None) -> None:
    """Append every problem of the sg2im-form graph ``d`` to ``rep``."""
    for key in d:
        if key not in SG2IM_KEYS:
            rep.warn(f"unknown key {_show(key)} ignored{_suggest(str(key), SG2IM_KEYS)}")

    objects = d.get("objects")
    n = None
    if "objects" not in d:
        rep.error("missing 'objects' (a list of object names)")
    elif not isinstance(objects, list):
        rep.error(f"'objects' must be a list of names, got {_kind(objects)}")
    elif not objects:
        rep.error("empty graph: 'objects' is an empty list")
    else:
        n = len(objects)
        if max_objects is not None and n > max_objects:
            rep.error(f"{n} objects, more than the limit of {max_objects}")
        for i, name in enumerate(objects):
            if not isinstance(name, str):
                rep.error(f"expected a name (string), got {_kind(name)} {_show(name)}", f"object {i}")
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
        rep.error(f"'relationships' must be a list of [subject, predicate, object], got {_kind(rels)}")
        rels = []
    for j, rel in enumerate(rels):
        at = f"relation {j}"
        if not isinstance(rel, (list, tuple)):
            rep.error(f"expected [subject, predicate, object], got {_kind(rel)} {_show(rel)}", at)
            continue
        if len(rel) != 3:
            rep.error(f"expected 3 items [subject, predicate, object], got {len(rel)}: {_show(rel)}", at)
            continue
        s, p, o = rel
        bad = [m for m in (_check_index(s, "subject", n, names), _check_index(o, "object", n, names)) if m]
        for m in bad:
            rep.error(m, at)
        if not isinstance(p, str):
            rep.error(f"predicate must be a string, got {_kind(p)} {_show(p)}", at)
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
                      f"got {_kind(descriptions)}")
        else:
            if n is not None and len(descriptions) != n:
                rep.error(f"'descriptions' has {len(descriptions)} entries, expected one per object ({n})")
            for i, text in enumerate(descriptions):
                if text is not None and not isinstance(text, str):
                    rep.error(f"description must be a string or null, got {_kind(text)} {_show(text)}",
                              f"object {i}")

    boxes = d.get("boxes")
    if boxes is not None:
        if not isinstance(boxes, list):
            rep.error(f"'boxes' must be a list of [x0, y0, x1, y1], one per object, got {_kind(boxes)}")
        else:
            if n is not None and len(boxes) != n:
                rep.error(f"'boxes' has {len(boxes)} entries, expected one per object ({n})")
            for i, box in enumerate(boxes):
                if box is None:
                    rep.error("no box (give a box for every object or for none)", f"object {i}")
                elif (why := _check_box(box)) is not None:
                    rep.error(why, f"object {i}")

    caption = d.get("caption")
    if caption is not None and not isinstance(caption, str):
        rep.error(f"'caption' must be a string, got {_kind(caption)}")


def _node_link_to_sg2im(d: dict, rep: _Report) -> dict | None:
    """Convert node-link data to the sg2im form; object i is node i, relation j is edge j."""
    nodes = d.get("nodes")
    if not isinstance(nodes, list):
        rep.error(f"node-link 'nodes' must be a list, got {_kind(nodes)}")
        return None
    edges = d.get("edges", d.get("links", []))
    if not isinstance(edges, list):
        rep.error(f"node-link 'edges' must be a list, got {_kind(edges)}")
        return None
    before = len(rep.errors)
    ids: dict = {}
    objects, descriptions, boxes = [], [], []
    for i, node in enumerate(nodes):
        at = f"object {i}"
        if not isinstance(node, dict):
            rep.error(f"node must be a JSON object with 'id' and 'name', got {_kind(node)}", at)
            continue
        if "id" not in node:
            rep.error("node has no 'id'", at)
        elif not isinstance(node["id"], (str, int)) or isinstance(node["id"], bool):
            rep.error(f"node id must be a string or an integer, got {_kind(node['id'])}", at)
        elif node["id"] in ids:
            rep.error(f"node id {_show(node['id'])} appears twice (also object {ids[node['id']]})", at)
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
                      f"got {_kind(edge)}", at)
            continue
        ends = []
        for end in ("source", "target"):
            if end not in edge:
                rep.error(f"edge has no {end!r}", at)
            elif not isinstance(edge[end], (str, int)) or isinstance(edge[end], bool) or edge[end] not in ids:
                rep.error(f"{end} {_show(edge[end])} is not a node id", at)
            else:
                ends.append(ids[edge[end]])
        if "predicate" not in edge:
            rep.error("edge has no 'predicate'", at)
        if len(ends) == 2:
            rels.append([ends[0], edge.get("predicate"), ends[1]])
    attrs = d.get("graph", {})
    if not isinstance(attrs, dict):
        rep.error(f"node-link 'graph' must be a JSON object, got {_kind(attrs)}")
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


def _is_node_link(d: dict) -> bool:
    return "nodes" in d and "objects" not in d


def _check_graph(data: Any, source: str, index: int, vocab: Vocab | None, max_objects: int | None,
                 strict: bool) -> tuple["SceneGraph | None", list[str], list[str]]:
    """Check one graph (either form); return it as a SceneGraph when it has no errors."""
    rep = _Report(f"{source}: graph {index}", strict)
    if not isinstance(data, dict):
        rep.error("expected a scene graph (JSON object with 'objects' and 'relationships'), "
                  f"got {_kind(data)}")
        return None, rep.errors, rep.warnings
    if _is_node_link(data):
        unknown = [k for k in data if k not in _NODE_LINK_KEYS]
        for k in unknown:
            rep.warn(f"unknown node-link key {_show(k)} ignored")
        data = _node_link_to_sg2im(data, rep)
        if data is None:
            return None, rep.errors, rep.warnings
    _check_sg2im(data, rep, vocab, max_objects)
    if rep.errors:
        return None, rep.errors, rep.warnings
    g = SceneGraph._from_checked(data)
    g.source, g.index = source, index
    return g, rep.errors, rep.warnings


# -- files -------------------------------------------------------------------------------------
def _load_json(path: str | Path) -> tuple[Any, str | None]:
    """(data, None) or (None, one-line error) for a JSON file."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None, f"{name}: file not found"
    except IsADirectoryError:
        return None, f"{name}: is a directory, not a JSON file"
    except PermissionError:
        return None, f"{name}: permission denied"
    except OSError as e:
        return None, f"{name}: cannot read ({e.strerror or e})"
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as some editors write
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        byte = raw[e.start]
        return None, f"{name}:{line}:{col}: not UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8"
    if not text.strip():
        return None, f"{name}: file is empty (expected a scene graph or a list of scene graphs)"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"{name}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}"
    except RecursionError:
        return None, f"{name}: malformed JSON: nested too deeply"
    except ValueError as e:  # e.g. an integer literal longer than Python's digit limit
        return None, f"{name}: malformed JSON: {e}"


def validate_data(
    data: Any,
    vocab: Vocab | None = None,
    max_objects: int | None = DEFAULT_MAX_OBJECTS,
    *,
    source: str = "<data>",
    strict: bool = False,
    warnings: list[str] | None = None,
) -> tuple[list["SceneGraph"], list[str]]:
    """Check parsed JSON (one graph, a list of graphs, or node-link data).

    Returns the graphs that are valid and one line per error in any graph. Warnings (self-
    referencing relations, unknown keys) are appended to ``warnings`` when given, or count as
    errors with ``strict``.
    """
    _check_max_objects(max_objects)
    if isinstance(data, dict):
        items = [data]
    elif isinstance(data, list):
        if not data:
            return [], [f"{source}: no scene graphs (the list is empty)"]
        items = data
    else:
        return [], [f"{source}: expected a scene graph (JSON object) or a list of scene graphs "
                    f"at the top level, got {_kind(data)}"]
    graphs, errors = [], []
    for i, item in enumerate(items):
        g, errs, warns = _check_graph(item, source, i, vocab, max_objects, strict)
        errors.extend(errs)
        if warnings is not None:
            warnings.extend(warns)
        if g is not None:
            graphs.append(g)
    return graphs, errors


def validate_file(
    path: str | Path,
    vocab: Vocab | None = None,
    max_objects: int | None = DEFAULT_MAX_OBJECTS,
    *,
    strict: bool = False,
    warnings: list[str] | None = None,
) -> tuple[list["SceneGraph"], list[str]]:
    """Read and check a scene-graph JSON file; collect every error, one line each.

    Returns ``(valid graphs, error lines)``: the file is good when the error list is empty.
    ``max_objects=None`` means no limit. See :func:`validate_data` for ``strict`` and ``warnings``.
    """
    _check_max_objects(max_objects)
    data, err = _load_json(path)
    if err is not None:
        return [], [err]
    return validate_data(data, vocab, max_objects, source=str(path), strict=strict, warnings=warnings)


def _first_error(errors: list[str]) -> GraphError:
    more = f" (and {_plural(len(errors) - 1, 'more error')})" if len(errors) > 1 else ""
    return GraphError(errors[0] + more)


def _format_json(value: Any, indent: int = 0) -> str:
    """JSON with a list of scalars on one line (a relation, a box), other containers indented."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(value, dict) and value:
        body = ",\n".join(f"{inner}{json.dumps(k, ensure_ascii=False)}: {_format_json(v, indent + 1)}"
                          for k, v in value.items())
        return "{\n" + body + "\n" + pad + "}"
    if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
        body = ",\n".join(inner + _format_json(v, indent + 1) for v in value)
        return "[\n" + body + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


def write_graphs(path: str | Path, graphs: Iterable["SceneGraph"], *, node_link: bool = False) -> None:
    """Write graphs as a JSON list (sg2im form, or node-link with ``node_link``), atomically.

    Every graph is checked first (without a vocabulary), so no invalid file is written.
    """
    from .io import atomic_write_text

    graphs = list(graphs)
    for g in graphs:
        errors = g.validate(None, max_objects=None)
        if errors:
            raise _first_error(errors)
    data = [g.to_node_link() if node_link else g.to_dict() for g in graphs]
    atomic_write_text(path, _format_json(data) + "\n")


# -- the graph ---------------------------------------------------------------------------------
class SceneGraph:
    """Objects (nodes 0..N-1) and relations between them, kept in a ``networkx.MultiDiGraph``.

    ``self.nx`` holds node attributes ``name`` and optional ``description`` / ``box``, edges
    ``(s, o, key)`` with attribute ``predicate``, and graph attribute ``caption``. It is a
    *multi*-digraph because the same ordered pair may carry several relations (sg2im's files repeat
    triples). Edge keys are unique, increasing integers, so sorting by key gives the relations in
    the order they were added. Read ``self.nx`` freely; change the graph through the methods here.

    Object names are not checked against a vocabulary until :meth:`validate` or :meth:`to_item`.
    """

    def __init__(
        self,
        objects: Sequence[str] = (),
        relationships: Sequence[Sequence] = (),
        *,
        descriptions: Sequence[str | None] | None = None,
        boxes: Sequence[Sequence[float] | None] | None = None,
        caption: str | None = None,
    ):
        self.nx = nx.MultiDiGraph()
        self._next_key = 0
        #: Where the graph came from, for messages: a file name and the graph's index in it.
        self.source, self.index = "<graph>", 0
        n = len(objects)
        for given, what in ((descriptions, "descriptions"), (boxes, "boxes")):
            if given is not None and len(given) != n:
                raise GraphError(self._where(
                    f"'{what}' has {len(given)} entries, expected one per object ({n})"))
        for i, name in enumerate(objects):
            self.add_object(name, description=descriptions[i] if descriptions else None,
                            box=boxes[i] if boxes else None)
        for s, p, o in relationships:
            self.add_relation(s, p, o)
        self.caption = caption

    # -- building ------------------------------------------------------------------------------
    def _where(self, msg: str) -> str:
        return f"{self.source}: graph {self.index}: {msg}"

    def add_object(self, name: str, description: str | None = None,
                   box: Sequence[float] | None = None) -> int:
        """Add an object; returns its index."""
        i = self.nx.number_of_nodes()
        if not isinstance(name, str) or not name.strip():
            raise GraphError(self._where(f"object {i}: expected a non-empty name, got {_show(name)}"))
        if name == IMAGE_OBJECT:
            raise GraphError(self._where(f"object {i}: {IMAGE_OBJECT!r} is added by layout2img; remove it"))
        self.nx.add_node(i, name=name)
        self.set_description(i, description)
        try:
            self.set_box(i, box)
        except GraphError:
            self.nx.remove_node(i)
            raise
        return i

    def add_relation(self, subject: int, predicate: str, obj: int) -> int:
        """Add ``subject --predicate--> obj``; returns the relation's index."""
        j = self.num_relations
        n = self.num_objects
        for role, v in (("subject", subject), ("object", obj)):
            why = _check_index(v, role, n, self.objects)
            if why:
                raise GraphError(self._where(f"relation {j}: {why}"))
        if not isinstance(predicate, str) or not predicate.strip():
            raise GraphError(self._where(
                f"relation {j}: predicate must be a non-empty string, got {_show(predicate)}"))
        if predicate == IN_IMAGE:
            raise GraphError(self._where(
                f"relation {j}: {IN_IMAGE!r} is added by layout2img; remove this relation"))
        self.nx.add_edge(subject, obj, key=self._next_key, predicate=predicate)
        self._next_key += 1
        return j

    def set_box(self, i: int, box: Sequence[float] | None) -> None:
        """Fix (or with None, free) object ``i``'s box ``[x0, y0, x1, y1]`` in [0, 1]."""
        self._node(i)
        if box is None:
            self.nx.nodes[i].pop("box", None)
            return
        if hasattr(box, "tolist"):  # a tensor or an array
            box = box.tolist()
        elif isinstance(box, (list, tuple)):
            box = [v.item() if hasattr(v, "item") else v for v in box]
        why = _check_box(box)
        if why:
            raise GraphError(self._where(f"object {i}: {why}"))
        self.nx.nodes[i]["box"] = [float(v) for v in box]

    def set_description(self, i: int, text: str | None) -> None:
        self._node(i)
        if text is None:
            self.nx.nodes[i].pop("description", None)
        elif not isinstance(text, str):
            raise GraphError(self._where(f"object {i}: description must be a string, got {_kind(text)}"))
        else:
            self.nx.nodes[i]["description"] = text

    def remove_relation(self, j: int) -> None:
        edges = self._edges()
        if not isinstance(j, int) or not 0 <= j < len(edges):
            raise GraphError(self._where(f"relation {j}: no such relation (graph has {len(edges)})"))
        s, o, key, _ = edges[j]
        self.nx.remove_edge(s, o, key=key)

    def remove_object(self, i: int) -> None:
        """Remove object ``i`` and its relations; later objects move down by one."""
        self._node(i)
        # Rebuilt rather than relabelled in place, so nodes stay in index order 0..N-2.
        g = nx.MultiDiGraph()
        g.graph.update(self.nx.graph)
        for k in range(self.num_objects):
            if k != i:
                g.add_node(k - (k > i), **self.nx.nodes[k])
        for s, o, key, attrs in self.nx.edges(keys=True, data=True):
            if i not in (s, o):
                g.add_edge(s - (s > i), o - (o > i), key=key, **attrs)
        self.nx = g

    def _node(self, i: int) -> None:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.num_objects:
            have = _plural(self.num_objects, "object")
            raise GraphError(self._where(f"object {i}: no such object (graph has {have})"))

    def _edges(self) -> list[tuple[int, int, int, str]]:
        return sorted(((s, o, k, p) for s, o, k, p in self.nx.edges(keys=True, data="predicate")),
                      key=lambda e: e[2])

    # -- reading the graph ---------------------------------------------------------------------
    @property
    def num_objects(self) -> int:
        return self.nx.number_of_nodes()

    @property
    def num_relations(self) -> int:
        return self.nx.number_of_edges()

    @property
    def objects(self) -> list[str]:
        return [self.nx.nodes[i]["name"] for i in range(self.num_objects)]

    @property
    def relationships(self) -> list[list]:
        """``[subject, predicate, object]`` in the order they were added."""
        return [[s, p, o] for s, o, _, p in self._edges()]

    @property
    def descriptions(self) -> list[str | None]:
        """One entry per object: its free-text description, or None."""
        return [self.nx.nodes[i].get("description") for i in range(self.num_objects)]

    @property
    def boxes(self) -> list[list[float] | None] | None:
        """None when no object has a box; else one entry per object (None where it has none)."""
        boxes = [self.nx.nodes[i].get("box") for i in range(self.num_objects)]
        return None if all(b is None for b in boxes) else [None if b is None else list(b) for b in boxes]

    @property
    def caption(self) -> str | None:
        return self.nx.graph.get("caption")

    @caption.setter
    def caption(self, text: str | None) -> None:
        if text is None:
            self.nx.graph.pop("caption", None)
        elif not isinstance(text, str):
            raise GraphError(self._where(f"'caption' must be a string, got {_kind(text)}"))
        else:
            self.nx.graph["caption"] = text

    def summary(self) -> str:
        """One line, e.g. ``5 objects, 4 relations, boxes, descriptions, caption``."""
        parts = [_plural(self.num_objects, "object"), _plural(self.num_relations, "relation")]
        if self.boxes is not None:
            parts.append("boxes")
        if any(t is not None for t in self.descriptions):
            parts.append("descriptions")
        if self.caption is not None:
            parts.append("caption")
        return ", ".join(parts)

    def __len__(self) -> int:
        return self.num_objects

    def __eq__(self, other) -> bool:
        return isinstance(other, SceneGraph) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"SceneGraph({self.summary()}: {', '.join(self.objects)})"

    def copy(self) -> "SceneGraph":
        return copy.deepcopy(self)

    # -- checking ------------------------------------------------------------------------------
    def validate(self, vocab: Vocab | None = None, max_objects: int | None = DEFAULT_MAX_OBJECTS,
                 *, strict: bool = False) -> list[str]:
        """Every problem with this graph as one line each (empty when it is valid)."""
        _check_max_objects(max_objects)
        rep = _Report(f"{self.source}: graph {self.index}", strict)
        _check_sg2im(self.to_dict(), rep, vocab, max_objects)
        return rep.errors

    # -- dicts and JSON ------------------------------------------------------------------------
    @classmethod
    def _from_checked(cls, d: dict) -> "SceneGraph":
        return cls(d["objects"], d.get("relationships") or (), descriptions=d.get("descriptions"),
                   boxes=d.get("boxes"), caption=d.get("caption"))

    @classmethod
    def from_dict(cls, d: dict, vocab: Vocab | None = None, source: str = "<dict>", index: int = 0,
                  max_objects: int | None = None, *, strict: bool = False) -> "SceneGraph":
        """A graph from a dict in sg2im form (or node-link form); GraphError on the first problem."""
        _check_max_objects(max_objects)
        g, errors, _ = _check_graph(d, source, index, vocab, max_objects, strict)
        if errors:
            raise _first_error(errors)
        return g

    def to_dict(self) -> dict:
        """The sg2im form; ``descriptions``, ``boxes`` and ``caption`` only when present."""
        d: dict = {"objects": self.objects, "relationships": self.relationships}
        descriptions = self.descriptions
        if any(t is not None for t in descriptions):
            d["descriptions"] = descriptions
        if self.boxes is not None:
            d["boxes"] = self.boxes
        if self.caption is not None:
            d["caption"] = self.caption
        return d

    @classmethod
    def from_node_link(cls, d: dict, vocab: Vocab | None = None, source: str = "<node-link>",
                       index: int = 0, max_objects: int | None = None) -> "SceneGraph":
        if not isinstance(d, dict) or not _is_node_link(d):
            raise GraphError(f"{source}: graph {index}: expected node-link data (a JSON object with 'nodes')")
        return cls.from_dict(d, vocab, source=source, index=index, max_objects=max_objects)

    def to_node_link(self) -> dict:
        """What ``networkx.node_link_data`` writes (``edges`` key); edge keys are relation indices."""
        nodes = []
        for i in range(self.num_objects):
            node = {"id": i, "name": self.nx.nodes[i]["name"]}
            for attr in ("description", "box"):
                if attr in self.nx.nodes[i]:
                    node[attr] = self.nx.nodes[i][attr]
            nodes.append(node)
        edges = [{"source": s, "target": o, "key": j, "predicate": p}
                 for j, (s, p, o) in enumerate(self.relationships)]
        graph = {"caption": self.caption} if self.caption is not None else {}
        return {"directed": True, "multigraph": True, "graph": graph, "nodes": nodes, "edges": edges}

    @classmethod
    def from_networkx(cls, graph: nx.DiGraph, vocab: Vocab | None = None, source: str = "<networkx>",
                      index: int = 0) -> "SceneGraph":
        """A graph from any networkx digraph whose nodes have ``name`` and edges ``predicate``."""
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
        return cls.from_dict(d, vocab, source=source, index=index)

    def to_networkx(self) -> nx.MultiDiGraph:
        return self.nx.copy()

    @staticmethod
    def read(path: str | Path, vocab: Vocab | None = None,
             max_objects: int | None = DEFAULT_MAX_OBJECTS, *, strict: bool = False) -> list["SceneGraph"]:
        """All graphs in a file (one graph, a list, or node-link); GraphError on the first problem."""
        graphs, errors = validate_file(path, vocab, max_objects, strict=strict)
        if errors:
            raise _first_error(errors)
        return graphs

    def write(self, path: str | Path, *, node_link: bool = False) -> None:
        """Write this one graph as a JSON object (sg2im form, or node-link), atomically."""
        from .io import atomic_write_text

        errors = self.validate(None, max_objects=None)
        if errors:
            raise _first_error(errors)
        data = self.to_node_link() if node_link else self.to_dict()
        atomic_write_text(path, _format_json(data) + "\n")

    # -- the model's input ---------------------------------------------------------------------
    def to_item(self, vocab: Vocab) -> dict:
        """The item of ``layout2img.data.batch``: ``__image__`` appended last, one ``__in_image__``
        triple per object, boxes ``(O, 4)`` with ``[0, 0, 1, 1]`` for ``__image__`` (or None)."""
        import torch

        if not isinstance(vocab, Vocab):
            raise VocabError(self._where(f"to_item needs a Vocab, got {type(vocab).__name__}"))
        errors = self.validate(vocab, max_objects=None)
        if errors:
            raise _first_error(errors)
        n = self.num_objects
        image = vocab.object_index(IMAGE_OBJECT)
        in_image = vocab.predicate_index(IN_IMAGE)
        objs = [vocab.object_index(name) for name in self.objects] + [image]
        triples = [[s, vocab.predicate_index(p), o] for s, p, o in self.relationships]
        triples += [[i, in_image, n] for i in range(n)]
        boxes = self.boxes
        if boxes is not None:
            boxes = torch.tensor(boxes + [[0.0, 0.0, 1.0, 1.0]], dtype=torch.float32)
        return {
            "objs": torch.tensor(objs, dtype=torch.long),
            "triples": torch.tensor(triples, dtype=torch.long).reshape(-1, 3),
            "boxes": boxes,
            "masks": None,
            "image": None,
            "caption": self.caption,
            "descriptions": self.descriptions + [None],
        }
