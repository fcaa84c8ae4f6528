"""The Dagster-free fingerprint core: decode, spectrogram, peaks, hashes, index, match."""

from .hashes import Hashes, hash_peaks, pack, unpack
from .index import PostingArrays, build_postings
from .matcher import (
    DEFAULT_MATCH_PARAMS,
    MatchParams,
    Pass,
    Searchable,
    fingerprint,
    match_samples,
    passes,
)
from .params import DEFAULT_PARAMS, FingerprintParams, ParameterError
from .peaks import find_peaks, find_peaks_reference
from .records import Episode, Match, MatchResult
from .spectrogram import spectrogram

__all__ = [
    "DEFAULT_MATCH_PARAMS",
    "DEFAULT_PARAMS",
    "Episode",
    "FingerprintParams",
    "Hashes",
    "Match",
    "MatchParams",
    "MatchResult",
    "ParameterError",
    "Pass",
    "PostingArrays",
    "Searchable",
    "build_postings",
    "find_peaks",
    "find_peaks_reference",
    "fingerprint",
    "hash_peaks",
    "match_samples",
    "pack",
    "passes",
    "spectrogram",
    "unpack",
]
