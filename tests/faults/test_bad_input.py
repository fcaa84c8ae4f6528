"""Bad input through the CLI: each hostile file gets its clear error (exit 2, the file named,
no traceback), and nothing stored changes (the snapshot's files hashed before and after)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .conftest import FaultFigures, Library, citywok, hostile_inputs, tree_digest

pytestmark = pytest.mark.slow


def test_hostile_clips_given_to_match_each_get_a_clear_error_and_change_nothing(
    library: Library, tmp_path: Path, fault_figures: FaultFigures
) -> None:
    bad = hostile_inputs(tmp_path / "clips", good=library.files[0])
    before = tree_digest(library.snapshot)
    result = citywok("match", library.snapshot, *(h.path for h in bad), "--json")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("citywok: error:")]
    for h in bad:
        (line,) = (e for e in errors if str(h.path) in e)
        assert re.search(h.reason, line), f"{h.kind}: {line}"
    assert tree_digest(library.snapshot) == before
    fault_figures.add("bad input", "citywok match", inputs=len(bad), clear_errors=len(bad),
                      artefacts_changed=0)  # fmt: skip


def _indexed_copy(library: Library, tmp_path: Path) -> tuple[Path, Path]:
    media, snapshot = tmp_path / "media", tmp_path / "snapshot"
    shutil.copytree(library.media, media)
    shutil.copytree(library.snapshot, snapshot)
    # The copy's shards name the library's media root: index the copy once to own them.
    result = citywok("index", media, "--snapshot", snapshot, "--fingerprints-only", "-q")
    assert result.returncode == 0, result.stderr
    return media, snapshot


@pytest.mark.parametrize("how", ["emptied", "unmounted", "most files lost", "vanished"])
def test_index_refuses_a_media_root_that_lost_its_files_and_changes_nothing(
    library: Library, tmp_path: Path, how: str, fault_figures: FaultFigures
) -> None:
    media, snapshot = _indexed_copy(library, tmp_path)
    before = tree_digest(snapshot)
    if how == "emptied":
        for p in media.rglob("*.*"):
            p.unlink()
    elif how == "unmounted":  # the mount point stays, as an empty folder
        shutil.rmtree(media)
        media.mkdir()
    elif how == "most files lost":
        for p in sorted(media.rglob("*.*"))[1:]:
            p.unlink()
    else:
        shutil.rmtree(media)
    result = citywok("index", media, "--snapshot", snapshot, "--fingerprints-only", "-q")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    if how == "vanished":
        assert f"citywok: error: {media}: media root is not a directory" in result.stderr
    else:
        assert f"citywok: error: {media}: holds {1 if how == 'most files lost' else 0} media " \
               "file(s), but the last build of" in result.stderr  # fmt: skip
        assert "Nothing was changed; pass --allow-empty" in result.stderr
    assert tree_digest(snapshot) == before
    fault_figures.tally("bad input", "citywok index on a lost media root", inputs=1,
                        clear_errors=1, artefacts_changed=0)  # fmt: skip


def test_index_with_allow_empty_indexes_what_is_left(library: Library, tmp_path: Path) -> None:
    media, snapshot = _indexed_copy(library, tmp_path)
    shutil.rmtree(media / "Show" / "Season 02")
    for p in (media / "Show" / "Season 01").glob("*E02*"):
        p.unlink()
    refused = citywok("index", media, "--snapshot", snapshot, "--fingerprints-only", "-q")
    assert refused.returncode == 2
    result = citywok("index", media, "--snapshot", snapshot, "--fingerprints-only", "-q",
                     "--allow-empty")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 season(s) built, 0 unchanged, 1 removed" in result.stderr
    assert sorted(p.name for p in snapshot.glob("*.lmdb")) == ["show-s01.lmdb"]


def test_hostile_files_in_a_media_tree_are_each_reported_and_the_other_shards_are_unchanged(
    library: Library, tmp_path: Path, fault_figures: FaultFigures
) -> None:
    import os

    from citywok_pipeline.demo.library import encode
    from tests.conftest import tone_music

    media, snapshot = _indexed_copy(library, tmp_path)
    season = media / "Show" / "Season 03"
    bad = hostile_inputs(season, good=library.files[0])
    for h in bad:  # each as an episode of its own
        h.path.rename(season / f"Show - S03E{bad.index(h) + 10:02d} {h.path.stem}{h.path.suffix}")
    expected = {f"S03E{i + 10:02d}": h.reason for i, h in enumerate(bad) if h.path.suffix in
                (".mp3", ".flac", ".mkv", ".m4a")}  # fmt: skip
    # Audio that ends half-way through what its header says (an interrupted copy).
    whole = encode(tone_music(20.0, 31, sample_rate=8000), tmp_path / "whole.mp3", sample_rate=8000)
    data = whole.read_bytes()
    (season / "Show - S03E01.mp3").write_bytes(data[: len(data) // 2])
    expected["S03E01"] = r"truncated: its audio ends at 9\.\d s, its header says 20\.0 s"
    # A decompression bomb: a few kB of FLAC that decode to ten minutes (the limit is 1 min).
    _ffmpeg_silence(season / "Show - S03E02.flac", seconds=600)
    expected["S03E02"] = r"decodes to more than 60 s of audio \(a decompression bomb\?\)"
    # A file name that is not UTF-8, holding good audio.
    odd = os.fsencode(season) + b"/Show - S03E03 caf\xe9.flac"
    encode(tone_music(20.0, 33, sample_rate=8000), Path(os.fsdecode(odd)), sample_rate=8000)
    # Symbolic links that lead nowhere, and a season folder with nothing in it.
    os.symlink("loop-b.mp3", season / "loop-a.mp3")
    os.symlink("loop-a.mp3", season / "loop-b.mp3")
    os.symlink("Season 05", media / "Show" / "Season 05")
    (media / "Show" / "Season 04").mkdir()
    skipped = {
        "Show/Season 03/loop-a.mp3": "a symbolic link loop",
        "Show/Season 03/loop-b.mp3": "a symbolic link loop",
        "Show/Season 05": "a symbolic link loop",
        "Show/Season 04": "season folder holds no media files",
    }
    kept = {p: d for p, d in tree_digest(snapshot).items() if "show-s03" not in p}

    for run in ("first", "again"):
        result = citywok("index", media, "--snapshot", snapshot, "--fingerprints-only", "-q",
                         "--max-hours", str(1 / 60))  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.splitlines()
        for marker, reason in expected.items():
            (line,) = (x for x in lines if x.startswith("citywok: error:") and marker in x)
            assert re.search(reason, line), f"{run}: {line}"
        for source, reason in skipped.items():
            assert f"citywok: skipped {source}: {reason}" in lines, f"{run}: {source}"
        assert {p: d for p, d in tree_digest(snapshot).items() if "show-s03" not in p} == kept
        fault_figures.tally("bad input", "citywok index", inputs=len(expected) + len(skipped),
                            clear_errors=len(expected) + len(skipped), artefacts_changed=0)  # fmt: skip

    # The truncated episode's half and the odd name are indexed; the odd name answers.
    info = citywok("info", snapshot, "--json")
    assert info.returncode == 0, info.stderr
    clip = tmp_path / "odd-clip.wav"
    from citywok_pipeline.fingerprint.audio import decode

    encode(decode(Path(os.fsdecode(odd)))[5 * 8000 : 11 * 8000], clip, sample_rate=8000)
    for args in (("--json",), ()):
        answer = citywok("match", snapshot, clip, *args)
        assert answer.returncode == 0, answer.stderr
        assert "show-s03e03" in answer.stdout
        assert "caf" in answer.stdout


def _ffmpeg_silence(path: Path, *, seconds: float) -> None:
    import subprocess

    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"anullsrc=r=8000:cl=mono:d={seconds}", "-c:a", "flac", str(path)],
        check=True,
    )  # fmt: skip
