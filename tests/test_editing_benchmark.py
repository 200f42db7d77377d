"""benchmarks/editing.py's report: success per colour and per class, the asked -> got confusion, and
its options checked before a model is loaded."""
from __future__ import annotations

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import editing  # noqa: E402  (benchmarks/editing.py)


def _case(shape, target, got):
    return {"shape": shape, "target": target, "result_color": got, "success": got == target,
            "success_mean_rgb": got == target, "seconds": 1.0, "cpu_seconds": 2.0, "steps_run": 10,
            "improved": True, "mean_abs_change_outside_object": 0.001, "mean_abs_change_outside_composite_mask": 0.0,
            "mean_abs_change_inside_object": 0.2, "original_color": "red", "gt_color": "red"}


def test_summary_counts_success_per_colour_and_class_and_the_confusion():
    cases = [_case("circle", "white", "white"), _case("circle", "white", "green"), _case("star", "blue", "orange"),
             _case("star", "blue", "blue"), _case("square", "white", "white")]
    s = editing.summarize_edits(cases)
    assert s["success_rate"] == pytest.approx(3 / 5)
    assert s["success_by_target_color"] == {"blue": "1/2", "white": "2/3"}
    assert s["success_by_class"] == {"circle": "1/2", "square": "1/1", "star": "1/2"}
    assert s["confusion_asked_to_got"] == {"blue": {"blue": 1, "orange": 1}, "white": {"green": 1, "white": 2}}
    table = editing.confusion_table(s).splitlines()
    assert table[0] == "| asked \\ got | blue | green | orange | white | success |"
    assert table[2] == "| blue | 1 | 0 | 1 | 0 | 1/2 |" and table[3] == "| white | 0 | 1 | 0 | 2 | 2/3 |"


@pytest.mark.parametrize("argv, message", [
    (["--examples", "8"], "--examples 8: expected an image file name"),
    (["--num-cases", "0"], "--num-cases must be at least 1, got 0"),
    (["--grid", "2by30"], "--grid '2by30': expected RESTARTSxSTEPS"),
])
def test_bad_options_are_one_line_before_any_model_loads(argv, message, capsys, tmp_path):
    # a checkpoint that does not exist: the options must fail first
    assert editing.main([*argv, "--checkpoint", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
