"""Scan a media tree ``MEDIA_ROOT/<show>/<season folder>/<files>`` into episodes and seasons.

Season numbers come from folder names like ``Season 1``, ``Season 01``, ``Series 2`` or
``S01``; episode numbers from ``S01E03``/``1x03``-style file names, else from file order.
Keys are stable and URL-safe: ``<show-slug>-s01`` for a season, ``<show-slug>-s01e03`` for
an episode.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MEDIA_EXTENSIONS = frozenset(
    {
        ".mp3",
        ".mp4",
        ".m4a",
        ".m4v",
        ".mkv",
        ".webm",
        ".opus",
        ".ogg",
        ".oga",
        ".flac",
        ".wav",
        ".aac",
        ".wma",
        ".avi",
        ".mov",
        ".ts",
        ".mka",
    }
)
_SEASON_RE = re.compile(r"^(?:season|series|staffel|saison)[\s._-]*(\d{1,4})\b|^s(\d{1,4})$", re.I)
_EPISODE_RE = re.compile(
    r"(?<![a-z0-9])s(\d{1,4})[\s._-]*e(\d{1,4})(?!\d)|(?<!\d)(\d{1,2})x(\d{1,3})(?!\d)", re.I
)


def slugify(name: str) -> str:
    """Lower-case ASCII letters and digits joined by single hyphens (``"Show A!"`` -> ``show-a``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "untitled"


def season_number(folder_name: str) -> int | None:
    m = _SEASON_RE.search(folder_name.strip())
    if not m:
        return None
    return int(m.group(1) or m.group(2))


def episode_numbers(file_name: str) -> tuple[int, int] | None:
    """(season, episode) from an ``S01E03`` or ``1x03`` marker in a file name."""
    m = _EPISODE_RE.search(Path(file_name).stem)
    if not m:
        return None
    if m.group(1) is not None:
        return int(m.group(1)), int(m.group(2))
    return int(m.group(3)), int(m.group(4))


@dataclass(frozen=True)
class MediaFile:
    path: Path
    source: str  # relative to the media root, with forward slashes
    show: str
    season_number: int
    episode_number: int

    @property
    def show_slug(self) -> str:
        return slugify(self.show)

    @property
    def season_id(self) -> str:
        return f"{self.show_slug}-s{self.season_number:02d}"

    @property
    def episode_id(self) -> str:
        return f"{self.season_id}e{self.episode_number:02d}"

    @property
    def title(self) -> str:
        return self.path.stem


@dataclass
class Scan:
    """What a media root holds: files by season, and what was skipped and why."""

    root: Path
    seasons: dict[str, list[MediaFile]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def files(self) -> list[MediaFile]:
        return [f for files in self.seasons.values() for f in files]


def _entries(folder: Path, scan: Scan, rel: Callable[[Path], str]) -> list[Path]:
    """The visible entries of ``folder``, sorted; symbolic links that lead nowhere (a loop,
    a dangling link) are reported as skipped instead."""
    out = []
    for p in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if p.is_symlink():
            try:
                p.stat()
            except OSError as exc:
                why = "a symbolic link loop" if exc.errno == errno.ELOOP else (
                    "a symbolic link to nothing" if exc.errno == errno.ENOENT else f"unreadable: {exc.strerror}"
                )  # fmt: skip
                scan.skipped.append((rel(p), why))
                continue
        out.append(p)
    return out


def scan_media(root: str | os.PathLike[str]) -> Scan:
    """List the episodes under ``root``; raises ``FileNotFoundError`` if it is not a directory.

    What is left out is listed in ``Scan.skipped`` with the reason: media files outside a
    season folder, folders without a season number, season folders without media files,
    shows without season folders, symbolic link loops and links to nothing, episode numbers
    claimed twice.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: media root is not a directory")
    scan = Scan(root)

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    for show_dir in _entries(root, scan, rel):
        if not show_dir.is_dir():
            if show_dir.suffix.lower() in MEDIA_EXTENSIONS:
                scan.skipped.append((rel(show_dir), "not inside <show>/<season folder>/"))
            continue
        seasons_found = 0
        for season_dir in _entries(show_dir, scan, rel):
            if not season_dir.is_dir():
                if season_dir.suffix.lower() in MEDIA_EXTENSIONS:
                    scan.skipped.append((rel(season_dir), "not inside a season folder"))
                continue
            number = season_number(season_dir.name)
            if number is None:
                scan.skipped.append(
                    (rel(season_dir), "folder name has no season number (like 'Season 1' or 'S01')")
                )
                continue
            seasons_found += 1
            files = [
                p
                for p in _entries(season_dir, scan, rel)
                if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS
            ]
            if not files:
                scan.skipped.append((rel(season_dir), "season folder holds no media files"))
            claimed: dict[int, MediaFile] = {}
            for order, path in enumerate(files, start=1):
                parsed = episode_numbers(path.name)
                ep = parsed[1] if parsed else order
                mf = MediaFile(path, rel(path), show_dir.name, number, ep)
                if ep in claimed:
                    scan.skipped.append(
                        (mf.source, f"episode {ep} is already {claimed[ep].source}")
                    )
                    continue
                claimed[ep] = mf
            if claimed:
                season_files = [claimed[k] for k in sorted(claimed)]
                scan.seasons.setdefault(season_files[0].season_id, []).extend(season_files)
        if not seasons_found:
            scan.skipped.append((rel(show_dir), "show folder holds no season folders"))
    return scan
