"""Which uploads are new: plain-function decisions, no Dagster and no network."""

from __future__ import annotations

import pytest

from citywok_pipeline.youtube import Upload, UploadOptions, plan_uploads

CHANNEL = "UC" + "a" * 22


def upload(i: int, **kw: object) -> Upload:
    return Upload(
        video_id=f"vid{i:08d}", channel_id=CHANNEL, title=f"E{i}", url=f"http://x/{i}",
        published=f"2026-01-{i + 1:02d}T00:00:00+00:00", **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_only_uploads_without_a_partition_are_new_newest_first() -> None:
    plan = plan_uploads([upload(1), upload(3), upload(2)], known={"yt-vid00000002"})
    assert [u.video_id for u in plan.new] == ["vid00000003", "vid00000001"]
    assert not plan.deferred and not plan.skipped


def test_at_most_max_new_per_tick_the_rest_deferred_newest_first() -> None:
    plan = plan_uploads(
        [upload(i) for i in range(5)], known=set(), options=UploadOptions(max_new=2)
    )
    assert [u.video_id for u in plan.new] == ["vid00000004", "vid00000003"]
    assert [u.video_id for u in plan.deferred] == ["vid00000002", "vid00000001", "vid00000000"]


def test_shorts_and_live_streams_are_skipped_with_a_reason_unless_asked_for() -> None:
    uploads = [
        upload(1, is_short=True),
        upload(2, live_status="is_upcoming"),
        upload(3, live_status="was_live"),
    ]
    plan = plan_uploads(uploads, known=set())
    assert [u.video_id for u in plan.new] == ["vid00000003"]
    assert dict(plan.skipped) == {
        "vid00000001": "a short (skip_shorts)",
        "vid00000002": "a live stream (is_upcoming; skip_live)",
    }
    everything = plan_uploads(
        uploads, known=set(), options=UploadOptions(skip_shorts=False, skip_live=False)
    )
    assert len(everything.new) == 3


def test_a_video_listed_twice_is_planned_once() -> None:
    plan = plan_uploads([upload(1), upload(1)], known=set())
    assert len(plan.new) == 1


def test_a_cap_below_one_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"max_new .* must be at least 1, got 0"):
        UploadOptions(max_new=0)
