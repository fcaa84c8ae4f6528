"""The accuracy benchmark's bookkeeping: scoring the answers of both matchers, and writing its
sections of RESULTS.md in place."""

from __future__ import annotations

import pytest

from benchmarks import accuracy, report


def _answer(source=None, offset_s=None, *, named=(), ambiguous=False, confidence=0.999):
    return {
        "source": source, "offset_s": offset_s, "confidence": confidence if source else None,
        "speed": 1.0, "pitch": 0.0, "tempo": 1.0, "named": sorted(named),
        "ambiguous": ambiguous, "passes": 1, "ms": 2.0, "cpu_ms": 2.0,
    }  # fmt: skip


def test_answers_are_scored_right_wrong_silent_and_ambiguous_per_cell():
    seen = {"kind": "seen", "case": "pitch_+1st", "length": 3.0, "source": "a.mkv", "start_s": 20}
    truth = [
        seen,
        seen,
        seen,
        {"kind": "unseen", "case": "clean", "length": 3.0},
        {"kind": "unseen", "case": "clean", "length": 3.0},
        {"kind": "intro", "case": "clean", "length": 3.0, "named": ["a.mkv", "b.mkv"]},
    ]
    answers = [
        _answer("a.mkv", 20.6),  # right: the episode, the offset within 1 s
        _answer("a.mkv", 22.0),  # wrong: the offset 2 s off
        _answer(),  # no answer: neither right nor wrong
        _answer(),  # unseen left without a match
        _answer("b.mkv", 3.0, confidence=0.95),  # unseen matched: a false match
        _answer("a.mkv", 1.0, named=["a.mkv", "b.mkv"], ambiguous=True),
    ]
    score = accuracy.score_accuracy([(truth, answers)])
    cell = score["cells"]["pitch_+1st/3s"]
    assert (cell["right"], cell["wrong"], cell["clips"]) == (1, 1, 3)
    assert cell["rate"] == pytest.approx(1 / 3)
    assert score["unseen_no_match"] == 0.5
    assert score["intro_ambiguous"] == 1.0
    assert score["change_reported_median"] == {"pitch_+1st": [1.0, 0.0, 1.0]}
    rate, clips, worst = accuracy.group_rate(score, ("pitch_+1st",), (3.0,))
    assert (rate, clips) == (pytest.approx(1 / 3), 3)
    assert worst.startswith("pitch_+1st 3 s")


def test_large_snapshot_groups_count_no_match_as_right_for_unseen_audio():
    truth = [
        {"kind": "seen", "group": "clean", "length": 5.0, "source": "a.mkv", "start_s": 10},
        {"kind": "unseen", "group": "unseen", "length": 5.0},
    ]
    out = accuracy.score_large(truth, [_answer("a.mkv", 10.2), _answer()])
    assert out["clean/5s"]["right"] == 1.0
    assert out["unseen/5s"]["right"] == 1.0
    assert out["clean/5s"]["cpu_p50_ms"] == 2.0


def test_a_section_is_replaced_in_place_and_one_without_markers_by_its_heading(
    tmp_path, monkeypatch
):
    md = tmp_path / "RESULTS.md"
    monkeypatch.setattr(report, "RESULTS_MD", md)
    md.write_text("# R\n\n## Accuracy (c)\n\nold table\n\n## Indexing speed (a)\n\nkept\n")
    lines = ["<!-- accuracy -->", "## Accuracy (c)", "new", "<!-- /accuracy -->"]
    report.replace_section(*lines[0::3], lines, legacy_heading="## Accuracy (c)")
    text = md.read_text()
    assert "old table" not in text
    assert text.index("new") < text.index("## Indexing speed (a)") and "kept" in text
    lines[2] = "newer"
    report.replace_section(*lines[0::3], lines, legacy_heading="## Accuracy (c)")
    text = md.read_text()
    assert "newer" in text and "\nnew\n" not in text
    assert text.index("newer") < text.index("## Indexing speed (a)")


def test_the_accuracy_section_names_the_niceness_the_run_had_and_none_it_did_not_record():
    truth = [
        {"kind": "seen", "case": "clean", "length": 3.0, "source": "a.mkv", "start_s": 20},
        {"kind": "unseen", "case": "clean", "length": 3.0},
        {"kind": "intro", "case": "clean", "length": 3.0, "named": ["a.mkv", "b.mkv"]},
    ]
    answers = [
        _answer("a.mkv", 20.2),
        _answer(),
        _answer("a.mkv", 1.0, named=["a.mkv", "b.mkv"], ambiguous=True),
    ]
    score = accuracy.score_accuracy([(truth, answers)])
    run = {"at": "2026-12-04 20:32 UTC", "machine": "2 cores", "load": "0.88 1.84 2.81"}
    a = {
        "run": {**run, "nice": 5}, "commits": {"previous": "a" * 40, "new": "b" * 40},
        "previous_ref": "043cd1d^", "seeds": 8, "clips_per_cell": 80, "unseen_per_cell": 24,
        "corpus": {"new": {"episodes": 24, "hours": 0.8}}, "previous": score, "new": score,
    }  # fmt: skip
    header = accuracy.accuracy_section(a)[3]
    assert "by `nice -n 5 python -m benchmarks.accuracy --previous 043cd1d^ --seeds 8`" in header
    header = accuracy.accuracy_section({**a, "run": run})[3]
    assert "by `python -m benchmarks.accuracy --previous 043cd1d^ --seeds 8`" in header
