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

:mod:`layout2img.graph_validation` does the checking (every problem, one line each). The
``__image__`` node and ``__in_image__`` triples are added by ``to_item``, never written by the user.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Sequence

import networkx as nx

from .errors import GraphError, VocabError
from .graph_validation import (DEFAULT_MAX_OBJECTS, GraphReport, box_problem, check_data, check_file,
                               check_graph_data, check_max_objects, check_sg2im, first_error, index_problem,
                               format_json, is_node_link, json_kind, networkx_to_sg2im, plural,
                               show_json)
from .io import atomic_write_text
from .vocab import IMAGE_OBJECT, IN_IMAGE, Vocab


def validate_data(data: Any, vocab: Vocab | None = None, max_objects: int | None = DEFAULT_MAX_OBJECTS, *,
                  source: str = "<data>", strict: bool = False,
                  warnings: list[str] | None = None) -> tuple[list["SceneGraph"], list[str]]:
    """Check parsed JSON (one graph, a list of graphs, or node-link data).

    Returns the graphs that are valid and one line per error in any graph. Warnings (self-
    referencing relations, unknown keys) are appended to ``warnings`` when given, or count as
    errors with ``strict``.
    """
    valid, errors = check_data(data, vocab, max_objects, source=source, strict=strict, warnings=warnings)
    return [SceneGraph._from_checked(d, source, i, vocab) for i, d in valid], errors


def validate_file(path: str | Path, vocab: Vocab | None = None, max_objects: int | None = DEFAULT_MAX_OBJECTS,
                  *, strict: bool = False,
                  warnings: list[str] | None = None) -> tuple[list["SceneGraph"], list[str]]:
    """Read and check a scene-graph JSON file; collect every error, one line each.

    Returns ``(valid graphs, error lines)``: the file is good when the error list is empty.
    ``max_objects=None`` means no limit. See :func:`validate_data` for ``strict`` and ``warnings``.
    """
    valid, errors = check_file(path, vocab, max_objects, strict=strict, warnings=warnings)
    return [SceneGraph._from_checked(d, str(path), i, vocab) for i, d in valid], errors


def write_graphs(path: str | Path, graphs: Iterable["SceneGraph"], *, node_link: bool = False) -> None:
    """Write graphs as a JSON list (sg2im form, or node-link with ``node_link``), atomically.

    Every graph is checked first (without a vocabulary), so no invalid file is written.
    """
    graphs = list(graphs)
    for g in graphs:
        errors = g.validate(None, max_objects=None)
        if errors:
            raise first_error(errors)
    data = [g.to_node_link() if node_link else g.to_dict() for g in graphs]
    atomic_write_text(path, format_json(data) + "\n")


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
        # (vocab, the sg2im dict that passed its checks): to_item skips re-checking an unchanged graph
        self._checked: tuple[Vocab, dict] | None = None
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
            raise GraphError(self._where(f"object {i}: expected a non-empty name, got {show_json(name)}"))
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
            why = index_problem(v, role, n, self.objects)
            if why:
                raise GraphError(self._where(f"relation {j}: {why}"))
        if not isinstance(predicate, str) or not predicate.strip():
            raise GraphError(self._where(
                f"relation {j}: predicate must be a non-empty string, got {show_json(predicate)}"))
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
        why = box_problem(box)
        if why:
            raise GraphError(self._where(f"object {i}: {why}"))
        self.nx.nodes[i]["box"] = [float(v) for v in box]

    def set_description(self, i: int, text: str | None) -> None:
        self._node(i)
        if text is None:
            self.nx.nodes[i].pop("description", None)
        elif not isinstance(text, str):
            raise GraphError(self._where(f"object {i}: description must be a string, got {json_kind(text)}"))
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
            have = plural(self.num_objects, "object")
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
            raise GraphError(self._where(f"'caption' must be a string, got {json_kind(text)}"))
        else:
            self.nx.graph["caption"] = text

    def summary(self) -> str:
        """One line, e.g. ``5 objects, 4 relations, boxes, descriptions, caption``."""
        parts = [plural(self.num_objects, "object"), plural(self.num_relations, "relation")]
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
        check_max_objects(max_objects)
        rep = GraphReport(f"{self.source}: graph {self.index}", strict)
        data = self.to_dict()
        check_sg2im(data, rep, vocab, max_objects)
        if not rep.errors and vocab is not None:
            self._checked = (vocab, data)
        return rep.errors

    # -- dicts and JSON ------------------------------------------------------------------------
    @classmethod
    def _from_checked(cls, d: dict, source: str, index: int, vocab: Vocab | None = None) -> "SceneGraph":
        g = cls(d["objects"], d.get("relationships") or (), descriptions=d.get("descriptions"),
                boxes=d.get("boxes"), caption=d.get("caption"))
        g.source, g.index = source, index
        if vocab is not None:
            g._checked = (vocab, g.to_dict())
        return g

    def checked_against(self, vocab: Vocab) -> bool:
        """Whether this graph, as it is now, passed the checks against ``vocab`` (when it was read
        or validated with it): then :meth:`to_item` does not check it again."""
        checked = self._checked
        return checked is not None and checked[0] is vocab and checked[1] == self.to_dict()

    @classmethod
    def from_dict(cls, d: dict, vocab: Vocab | None = None, source: str = "<dict>", index: int = 0,
                  max_objects: int | None = None, *, strict: bool = False) -> "SceneGraph":
        """A graph from a dict in sg2im form (or node-link form); GraphError on the first problem."""
        check_max_objects(max_objects)
        checked, errors, _ = check_graph_data(d, source, index, vocab, max_objects, strict)
        if errors:
            raise first_error(errors)
        return cls._from_checked(checked, source, index, vocab)

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
        if not isinstance(d, dict) or not is_node_link(d):
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
        return cls.from_dict(networkx_to_sg2im(graph), vocab, source=source, index=index)

    def to_networkx(self) -> nx.MultiDiGraph:
        return self.nx.copy()

    @staticmethod
    def read(path: str | Path, vocab: Vocab | None = None,
             max_objects: int | None = DEFAULT_MAX_OBJECTS, *, strict: bool = False) -> list["SceneGraph"]:
        """All graphs in a file (one graph, a list, or node-link); GraphError on the first problem."""
        graphs, errors = validate_file(path, vocab, max_objects, strict=strict)
        if errors:
            raise first_error(errors)
        return graphs

    def write(self, path: str | Path, *, node_link: bool = False) -> None:
        """Write this one graph as a JSON object (sg2im form, or node-link), atomically."""
        errors = self.validate(None, max_objects=None)
        if errors:
            raise first_error(errors)
        data = self.to_node_link() if node_link else self.to_dict()
        atomic_write_text(path, format_json(data) + "\n")

    # -- the model's input ---------------------------------------------------------------------
    def to_item(self, vocab: Vocab) -> dict:
        """The item of ``layout2img.data.batch``: ``__image__`` appended last, one ``__in_image__``
        triple per object, boxes ``(O, 4)`` with ``[0, 0, 1, 1]`` for ``__image__`` (or None)."""
        import torch

        if not isinstance(vocab, Vocab):
            raise VocabError(self._where(f"to_item needs a Vocab, got {type(vocab).__name__}"))
        if not self.checked_against(vocab):  # a graph read or validated with this vocab is not checked twice
            errors = self.validate(vocab, max_objects=None)
            if errors:
                raise first_error(errors)
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
