"""The one JSON reader (``read_json`` / ``parse_json``) and the readers that go through it."""
from __future__ import annotations

import json
import os

import pytest
import torch

from layout2img.data import shapes as S
from layout2img.data.coco_annotations import read_image_ids
from layout2img.errors import CheckpointError, DataError, GraphError, VocabError
from layout2img.graph import SceneGraph, validate_file
from layout2img.io import IMAGE_SUFFIXES, parse_json, read_json
from layout2img.training import checkpoint as ckpt
from layout2img.vocab import Vocab


def _message(call) -> str:
    with pytest.raises(Exception) as info:
        call()
    return str(info.value)


def test_read_json_reads_a_file_and_skips_a_byte_order_mark(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"x": [1, 2]}).encode())
    assert read_json(path) == {"x": [1, 2]}


@pytest.mark.parametrize("content, expected", [
    (b'{"a": 1,\n "b": }', "{path}:2:7: malformed JSON in word list: Expecting value"),
    (b'{"a": 1,\n "b": "gr\xe4ss"}', "{path}:2:10: not UTF-8 text in word list (byte 0xe4)"),
    (b" \n\t", "{path}: word list is empty (expected JSON)"),
    (b"[" * 100000, "{path}: malformed JSON in word list: nested too deeply"),
])
def test_read_json_failures_are_one_line_naming_file_line_and_column(tmp_path, content, expected):
    path = tmp_path / "words.json"
    path.write_bytes(content)
    with pytest.raises(VocabError) as info:
        read_json(path, "word list", VocabError)
    assert str(info.value) == expected.format(path=path)


def test_read_json_missing_file_folder_and_default_error(tmp_path):
    with pytest.raises(DataError, match=r"nope.json: captions JSON not found$"):
        read_json(tmp_path / "nope.json", "captions JSON")
    assert _message(lambda: read_json(tmp_path, "config")) == f"{tmp_path}: config is a folder, expected a JSON file"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_read_json_unreadable_file(tmp_path):
    path = tmp_path / "locked.json"
    path.write_text("{}")
    path.chmod(0)
    assert _message(lambda: read_json(path, "config")) == f"{path}: config: permission denied"


def test_parse_json_takes_text_or_bytes_and_any_error_factory():
    class StatusError(Exception):
        def __init__(self, status, message):
            super().__init__(message)
            self.status = status

    assert parse_json('[1, "a"]', "inline") == parse_json(b'[1, "a"]', "inline") == [1, "a"]
    with pytest.raises(StatusError) as info:
        parse_json(b'{"a": ', "request body", "the request", error=lambda m: StatusError(400, m))
    assert info.value.status == 400
    assert str(info.value) == "request body:1:7: malformed JSON in the request: Expecting value"


def test_scene_graph_files_report_read_errors_as_lines(tmp_path):
    path = tmp_path / "g.json"
    path.write_bytes(b'[{"objects": ["sky"]}\n{"objects": []}]')
    assert validate_file(path) == ([], [f"{path}:2:1: malformed JSON in scene-graph file: Expecting ',' delimiter"])
    assert validate_file(tmp_path / "none.json")[1] == [f"{tmp_path / 'none.json'}: scene-graph file not found"]
    path.write_text("")
    with pytest.raises(GraphError, match=r"g.json: scene-graph file is empty \(expected JSON\)$"):
        SceneGraph.read(path)


def test_vocabulary_files_and_the_builtin_vg_vocabulary(tmp_path):
    assert Vocab.by_name("vg").num_objects == 179
    path = tmp_path / "vocab.json"
    path.write_text('{"object_idx_to_name": ["a"')
    with pytest.raises(VocabError, match=r"vocab.json:1:28: malformed JSON in vocabulary file"):
        Vocab.from_file(path)


def test_image_id_lists_in_json(tmp_path):
    path = tmp_path / "ids.json"
    path.write_text('[9, "000000000101"]')
    assert read_image_ids(path) == [9, 101]
    path.write_text('[9,\n 10')
    with pytest.raises(DataError, match=r"ids.json:2:4: malformed JSON in image id list: Expecting ',' delimiter"):
        read_image_ids(path)


def test_shapes_meta_that_is_not_an_object_counts_as_absent(tmp_path):
    (tmp_path / "meta.json").write_text('{"dataset": "layout2img-shapes"}')
    assert S.read_meta(tmp_path) == {"dataset": "layout2img-shapes"}
    for text in ('{"dataset": ', '["layout2img-shapes"]'):
        (tmp_path / "meta.json").write_text(text)
        assert S.read_meta(tmp_path) is None
    assert S.read_meta(tmp_path / "missing") is None


def test_a_malformed_training_state_names_the_file(tmp_path):
    folder = ckpt.save_checkpoint(tmp_path / "checkpoints", 1, lambda d: (d / "model.safetensors").write_bytes(b""),
                                  {"step": 1, "w": torch.ones(1)})
    assert ckpt.load_training_state(folder)["step"] == 1
    (folder / ckpt.STATE_JSON).write_text('{"step": 1,')
    with pytest.raises(CheckpointError, match=rf"{ckpt.STATE_JSON}:1:12: malformed JSON in training state"):
        ckpt.load_training_state(folder)


def test_image_suffixes_are_the_ones_pil_writes():
    from PIL import Image

    assert ".png" in IMAGE_SUFFIXES and ".jpg" in IMAGE_SUFFIXES
    assert all(s in Image.registered_extensions() for s in IMAGE_SUFFIXES)


def test_the_version_is_the_package_metadata_and_saved_folders_record_it(tmp_path):
    from importlib import metadata

    import layout2img
    from layout2img import version
    from layout2img.models.classifier import ObjectClassifier

    assert layout2img.__version__ == version.__version__ == metadata.version("layout2img")
    assert version.source_tree_version() == metadata.version("layout2img")  # pyproject.toml's, as installed
    saved = ObjectClassifier(Vocab.shapes().num_objects, crop_size=8, width=4, vocab=Vocab.shapes()).save_pretrained(
        tmp_path / "clf")
    assert read_json(saved / "config.json")["layout2img_version"] == layout2img.__version__



def test_exclusive_output_refuses_a_second_writer_and_takes_over_a_dead_ones_lock(tmp_path):
    import subprocess
    import sys

    from layout2img.errors import WriteError
    from layout2img.io import exclusive_output

    out = tmp_path / "report.json"
    with exclusive_output(out, "--out"):
        assert (tmp_path / "report.json.lock").read_text() == str(os.getpid())
        with pytest.raises(WriteError, match=rf"--out {out}: another process \(pid {os.getpid()}\) is writing it"):
            with exclusive_output(out, "--out"):
                pass
    assert not (tmp_path / "report.json.lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "report.json.lock").write_text(dead.stdout.strip())  # a writer killed before it cleaned up
    with exclusive_output(out, "--out"):
        pass
    assert not (tmp_path / "report.json.lock").exists()
