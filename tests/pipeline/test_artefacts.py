"""Stored artefact formats, without Dagster (the store itself: tests/test_blobstore.py)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from citywok_pipeline.artefacts import (
    ArtefactFormatError,
    encode_flac,
    expected_postings,
    pack_fingerprints,
    unpack_fingerprints,
    waveform_png,
)
from citywok_pipeline.fingerprint import DEFAULT_PARAMS, FingerprintParams, fingerprint
from citywok_pipeline.fingerprint.audio import decode
from citywok_pipeline.fingerprint.hashes import Hashes
from tests.conftest import tone_music


def test_flac_is_lossless_at_16_bits_and_deterministic() -> None:
    x = tone_music(3.0, seed=1)
    flac = encode_flac(x, sample_rate=8000)
    assert flac[:4] == b"fLaC"
    assert encode_flac(x, sample_rate=8000) == flac
    y = decode(flac, sample_rate=8000)
    assert y.size == x.size
    assert np.max(np.abs(y - x)) <= 1.0 / 32768 + 1e-6


def test_fingerprints_round_trip_with_their_params() -> None:
    hashes = fingerprint(tone_music(5.0, seed=2), params=DEFAULT_PARAMS)
    blob, version = pack_fingerprints(hashes, episode_id="showa-s01e01", params=DEFAULT_PARAMS)
    stored = unpack_fingerprints(blob)
    assert stored.episode_id == "showa-s01e01"
    assert stored.params == DEFAULT_PARAMS
    assert stored.data_version == version
    np.testing.assert_array_equal(stored.hashes.keys, hashes.keys)
    np.testing.assert_array_equal(stored.hashes.times, hashes.times)
    assert len(blob) < 8 * len(hashes)
    again, version_again = pack_fingerprints(
        hashes, episode_id="showa-s01e01", params=DEFAULT_PARAMS
    )
    assert (again, version_again) == (blob, version)
    other = FingerprintParams(peaks_per_second=10.0)
    assert pack_fingerprints(hashes, episode_id="showa-s01e01", params=other)[1] != version


@pytest.mark.parametrize("blob", [b"", b"not zstd at all", zlib.compress(b"CWFP")])
def test_garbage_is_not_taken_for_fingerprints(blob: bytes) -> None:
    with pytest.raises(
        ArtefactFormatError, match="somewhere: not a readable fingerprints artefact"
    ):
        unpack_fingerprints(blob, label="somewhere")


def test_expected_postings_counts_distinct_key_and_frame_pairs() -> None:
    h = Hashes(np.array([5, 5, 5, 7], np.uint32), np.array([1.0, 1.2, 2.0, 1.0], np.float32))
    assert expected_postings(h) == 3


def test_waveform_thumbnail_is_a_valid_png() -> None:
    png = waveform_png(tone_music(2.0, seed=3), width=120, height=20)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (120, 20)
