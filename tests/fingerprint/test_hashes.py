import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from citywok_pipeline.fingerprint import (
    DEFAULT_PARAMS,
    Hashes,
    build_postings,
    hash_peaks,
    pack,
    unpack,
)
from citywok_pipeline.fingerprint.index import rarest_keys
from citywok_pipeline.fingerprint.peaks import PEAK_DTYPE

u8 = st.integers(0, 255)


@given(st.lists(st.tuples(u8, u8, st.integers(1, 63)), min_size=1, max_size=200))
def test_pack_then_unpack_gives_back_the_fields(triples):
    f1, f2, dt = (np.array(x) for x in zip(*triples, strict=True))
    keys = pack(f1, f2, dt)
    assert keys.dtype == np.uint32
    assert np.all(keys < (1 << 22))
    g1, g2, gdt = unpack(keys)
    np.testing.assert_array_equal(g1, f1)
    np.testing.assert_array_equal(g2, f2)
    np.testing.assert_array_equal(gdt, dt)


episode_hashes = st.lists(
    st.tuples(
        arrays(np.uint32, st.integers(0, 60), elements=st.integers(0, (1 << 22) - 1)),
        st.integers(0, 10_000),
    ),
    min_size=1,
    max_size=6,
)


@settings(deadline=None)  # the bitmap layout allocates 2**22 bits per example
@given(episode_hashes)
def test_postings_round_trip_every_episode_hash(data):
    per_episode = []
    for keys, seed in data:
        frames = np.random.default_rng(seed).integers(0, 100_000, keys.size)
        per_episode.append(Hashes(keys, frames.astype(np.float32)))
    flat = build_postings(per_episode)
    assert np.all(np.diff(flat.keys.astype(np.int64)) >= 0)
    for postings in (flat, flat.to_csr(), flat.to_bitmap(), flat.to_bitmap().to_csr()):
        check_layout(postings, per_episode)
    assert flat.smallest().nbytes() <= min(flat.nbytes(), flat.to_csr().nbytes())


def check_layout(postings, per_episode):
    for ep, h in enumerate(per_episode):
        want = sorted(set(zip(h.keys.tolist(), np.rint(h.times).astype(int).tolist(), strict=True)))
        back = postings.episode_hashes(ep)
        got = sorted(zip(back.keys.tolist(), np.rint(back.times).astype(int).tolist(), strict=True))
        assert got == want
    # A lookup finds every (episode, frame) of each key and nothing else.
    query = np.unique(np.concatenate([h.keys for h in per_episode]))
    qi, ep, frame = postings.lookup(query)
    found = sorted(zip(query[qi].tolist(), ep.tolist(), frame.tolist(), strict=True))
    expected = sorted(
        {
            (int(k), e, round(float(t)))
            for e, h in enumerate(per_episode)
            for k, t in zip(h.keys, h.times, strict=True)
        }
    )
    assert found == expected


@pytest.mark.parametrize("layout", ["flat", "csr", "bitmap"])
def test_lookup_of_absent_keys_finds_nothing(layout):
    postings = build_postings([Hashes(np.array([5, 9], np.uint32), np.array([1, 2], np.float32))])
    postings = postings.to_layout(layout)
    # Around present keys, at both ends of the key space, and past it.
    query = np.array([0, 4, 6, 10, (1 << 22) - 1, 1 << 22, 0xFFFFFFFF], np.uint32)
    qi, ep, frame = postings.lookup(query)
    assert qi.size == ep.size == frame.size == 0


@given(st.lists(st.integers(0, 500), max_size=50), st.integers(0, 5000))
def test_rarest_keys_fit_the_budget_and_leave_out_only_commoner_keys(counts, budget):
    counts = np.array(counts, dtype=np.int64)
    keep = rarest_keys(counts, budget)
    if counts.sum() <= budget:
        assert keep.all()
    else:
        assert counts[keep].sum() <= budget
        if keep.any() and (~keep).any():
            assert counts[keep].max() <= counts[~keep].min()


def test_a_hit_budget_leaves_out_the_commonest_keys():
    common = Hashes(np.full(40, 7, np.uint32), np.arange(40, dtype=np.float32))
    rare = Hashes(np.array([3, 11], np.uint32), np.array([5, 6], np.float32))
    postings = build_postings([common, rare])
    query = np.array([3, 7, 11], np.uint32)
    assert postings.lookup(query)[0].size == 42
    qi, ep, _ = postings.lookup(query, max_hits=10)
    assert sorted(query[qi].tolist()) == [3, 11]
    assert ep.tolist() == [1, 1]


def test_speed_rescaling_recovers_the_original_hashes():
    rng = np.random.default_rng(0)
    peaks = np.zeros(50, PEAK_DTYPE)
    peaks["t"] = np.sort(rng.uniform(0, 300, 50))
    peaks["f"] = rng.uniform(10, 200, 50)
    original = hash_peaks(peaks, params=DEFAULT_PARAMS)
    fast = peaks.copy()
    fast["t"] /= 1.02  # played 2% faster: earlier and higher (peaks are in band bins)
    lo = DEFAULT_PARAMS.bin_range[0]
    fast["f"] = (fast["f"] + lo) * 1.02 - lo
    plain = hash_peaks(fast, params=DEFAULT_PARAMS)
    undone = hash_peaks(fast, params=DEFAULT_PARAMS, time_factor=1.02, freq_factor=1.02)
    shared = lambda h: len(set(h.keys.tolist()) & set(original.keys.tolist()))  # noqa: E731
    assert shared(undone) >= 0.9 * len(original)
    assert shared(plain) < 0.5 * len(original)


def test_spread_hashes_hold_the_plain_ones_and_find_a_peak_that_crossed_a_bin_edge():
    rng = np.random.default_rng(1)
    peaks = np.zeros(60, PEAK_DTYPE)
    peaks["t"] = np.sort(rng.uniform(0, 300, 60))
    # Near the edges between bins: a shift of a fifth of a bin rounds every peak the other way.
    peaks["f"] = rng.integers(10, 200, 60) + rng.choice([0.4, -0.4], 60)
    plain = hash_peaks(peaks, params=DEFAULT_PARAMS)
    spread = hash_peaks(peaks, params=DEFAULT_PARAMS, spread=True)
    assert len(spread) == 4 * len(plain)
    assert set(plain.keys.tolist()) <= set(spread.keys.tolist())
    assert np.all(np.diff(spread.times) >= 0)
    moved = peaks.copy()
    moved["f"] += np.where(peaks["f"] % 1 < 0.5, 0.2, -0.2)  # towards the nearer edge
    crossed = hash_peaks(moved, params=DEFAULT_PARAMS)
    assert not set(crossed.keys.tolist()) & set(plain.keys.tolist())
    assert set(crossed.keys.tolist()) <= set(spread.keys.tolist())


def test_time_spread_hashes_hold_the_plain_ones_and_find_a_pair_a_frame_longer_or_shorter():
    rng = np.random.default_rng(2)
    peaks = np.zeros(60, PEAK_DTYPE)
    peaks["t"] = np.sort(rng.choice(np.arange(0, 600, 10), 60, replace=False)).astype(np.float32)
    peaks["f"] = rng.integers(10, 200, 60)
    plain = hash_peaks(peaks, params=DEFAULT_PARAMS)
    tolerant = hash_peaks(peaks, params=DEFAULT_PARAMS, time_spread=1)
    both = hash_peaks(peaks, params=DEFAULT_PARAMS, spread=True, time_spread=1)
    # Every distance is 10 frames or more and at most 63 - 10: none leaves 1..63 moved by one.
    _, _, dt = unpack(plain.keys)
    assert dt.min() >= 10 and dt.max() <= DEFAULT_PARAMS.max_dt - 1
    assert len(tolerant) == 3 * len(plain) and len(both) == 12 * len(plain)
    assert set(plain.keys.tolist()) <= set(tolerant.keys.tolist()) <= set(both.keys.tolist())
    assert np.all(np.diff(tolerant.times) >= 0)
    # Reverb smears peaks in time: a target peak one frame late (or early) makes a pair the
    # plain hashes miss and the tolerant ones hold.
    for shift in (1.0, -1.0):
        moved = peaks.copy()
        moved["t"][1::2] += shift
        crossed = set(hash_peaks(moved, params=DEFAULT_PARAMS).keys.tolist())
        assert crossed - set(plain.keys.tolist())
        assert crossed <= set(tolerant.keys.tolist())
