"""Looking keys up in many shards at once (StackedPostings) against one shard at a time."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citywok_pipeline.fingerprint import Hashes, build_postings
from citywok_pipeline.fingerprint.index import PostingArrays, StackedPostings, lookup_part_by_part
from citywok_pipeline.fingerprint.params import ParameterError

LAYOUTS = ("flat", "csr", "bitmap")


def make_part(rng: np.random.Generator, layout: str, n_episodes: int, key_space: int):
    """A shard of ``n_episodes`` episodes whose keys come from a small space (so that
    shards share keys and some keys have long posting lists)."""
    per_episode = []
    for _ in range(n_episodes):
        n = int(rng.integers(0, 80))
        keys = rng.integers(0, key_space, n).astype(np.uint32)
        per_episode.append(Hashes(keys, rng.integers(0, 50_000, n).astype(np.float32)))
    return build_postings(per_episode).to_layout(layout)


parts_spec = st.lists(
    st.tuples(st.sampled_from(LAYOUTS), st.integers(1, 5)), min_size=0, max_size=5
)


@settings(deadline=None, max_examples=60)  # a bitmap part allocates 2**22 bits
@given(parts_spec, st.integers(0, 2**32 - 1), st.sampled_from([None, 1, 25, 400]))
def test_stacked_lookup_gives_the_same_hits_in_the_same_order_as_part_by_part(spec, seed, max_hits):
    rng = np.random.default_rng(seed)
    key_space = int(rng.choice([64, 5_000, 1 << 22]))
    parts = [make_part(rng, layout, n, key_space) for layout, n in spec]
    bases = np.cumsum([0] + [n for _, n in spec])[:-1].tolist()
    # Sorted like the matcher's queries, with repeats, and keys past the 22-bit space.
    query = np.sort(
        np.concatenate(
            [
                rng.integers(0, key_space, int(rng.integers(0, 120))),
                rng.integers(1 << 22, 1 << 32, 2),
            ]
        )
    ).astype(np.uint32)
    want = lookup_part_by_part(parts, bases, query, max_hits=max_hits)
    got = StackedPostings(parts, bases).lookup(query, max_hits=max_hits)
    for w, g in zip(want, got, strict=True):
        assert g.dtype == np.int64
        np.testing.assert_array_equal(g, w)
    if max_hits is not None:
        assert got[0].size <= max_hits


def test_hits_name_global_episodes_and_their_frames():
    one = build_postings([Hashes(np.array([7, 9], np.uint32), np.array([3, 4], np.float32))])
    two = build_postings(
        [
            Hashes(np.array([1], np.uint32), np.array([0], np.float32)),
            Hashes(np.array([7, 7], np.uint32), np.array([10, 20], np.float32)),
        ]
    )
    stacked = StackedPostings([one.to_bitmap(), two.to_bitmap()], [0, 1])
    qi, ep, frame = stacked.lookup(np.array([7], np.uint32))
    assert list(zip(qi.tolist(), ep.tolist(), frame.tolist(), strict=True)) == [
        (0, 0, 3),
        (0, 2, 10),
        (0, 2, 20),
    ]


def test_a_budget_leaves_out_the_key_commonest_over_all_shards():
    # Key 5 is rare in each shard but the commonest over both: it goes first.
    a = build_postings([Hashes(np.array([5, 5, 6], np.uint32), np.array([1, 2, 3], np.float32))])
    b = build_postings([Hashes(np.array([5, 5, 8], np.uint32), np.array([1, 2, 3], np.float32))])
    stacked = StackedPostings([a.to_bitmap(), b.to_csr()], [0, 1])
    query = np.array([5, 6, 8], np.uint32)
    assert stacked.lookup(query)[0].size == 6
    qi, _, _ = stacked.lookup(query, max_hits=3)
    assert sorted(query[qi].tolist()) == [6, 8]


def test_parts_and_bases_must_pair_up():
    part = build_postings([Hashes(np.array([1], np.uint32), np.array([0], np.float32))])
    with pytest.raises(ValueError, match="base"):
        StackedPostings([part], [0, 1])


@pytest.mark.parametrize("damage", ["offset dropped", "last offset moved"])
def test_a_bitmap_part_whose_offsets_disagree_with_its_bitmap_is_refused(damage):
    # lookup gathers without bounds checks: the construction checks what makes that safe.
    part = make_part(np.random.default_rng(1), "bitmap", 3, 5_000)
    offsets = part.offsets.copy()
    if damage == "offset dropped":
        offsets = offsets[:-1]
    else:
        offsets[-1] += 1
    bad = PostingArrays(None, part.packed, part.off_bits, offsets, bitmap=part.bitmap)
    with pytest.raises(ParameterError, match="part 1: its key offsets do not match"):
        StackedPostings([part, bad], [0, 3])
