"""Posting layouts compared on the same postings: bytes per posting and lookup time.

- ``per-key varint``: one LMDB entry per hash, the list as LEB128 varints (episode index,
  frame delta), as a key-value design would store it.
- ``per-key varint+zstd``: the same, each list zstd-compressed.
- ``sorted arrays`` (what CityWok uses): two uint32 arrays sorted by key, read in place.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import lmdb
import numpy as np
import zstandard

from citywok_pipeline.fingerprint.index import PostingArrays


def _varint(values: list[int]) -> bytes:
    out = bytearray()
    for v in values:
        while True:
            b = v & 0x7F
            v >>= 7
            if v:
                out.append(b | 0x80)
            else:
                out.append(b)
                break
    return bytes(out)


def _unvarint(data: bytes) -> list[int]:
    out, cur, shift = [], 0, 0
    for b in data:
        cur |= (b & 0x7F) << shift
        if b & 0x80:
            shift += 7
        else:
            out.append(cur)
            cur, shift = 0, 0
    return out


def compare_layouts(postings: PostingArrays, queries: list[np.ndarray]) -> list[dict]:
    keys, packed, ob = postings.posting_keys(), postings.packed, postings.off_bits
    bounds = np.flatnonzero(np.diff(keys.astype(np.int64))) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [keys.size]))
    cctx = zstandard.ZstdCompressor(level=3)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, compress in (("per-key varint", False), ("per-key varint+zstd", True)):
            path = Path(tmp) / f"{compress}.lmdb"
            env = lmdb.open(
                str(path),
                subdir=False,
                map_size=8 * (keys.nbytes + packed.nbytes) + (64 << 20),
                lock=False,
            )
            with env.begin(write=True) as txn:
                for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
                    vals: list[int] = []
                    prev_ep, prev_fr = -1, 0
                    for p in packed[s:e].tolist():
                        ep, fr = p >> ob, p & ((1 << ob) - 1)
                        if ep != prev_ep:
                            vals += [ep, fr]
                            prev_ep = ep
                        else:
                            vals += [ep, fr - prev_fr]
                        prev_fr = fr
                    blob = _varint(vals)
                    if compress:
                        blob = cctx.compress(blob)
                    txn.put(int(keys[s]).to_bytes(4, "big"), blob)
            env.sync(True)
            env.close()
            size = path.stat().st_size
            env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
            dctx = zstandard.ZstdDecompressor()
            times = []
            with env.begin(buffers=False) as txn:
                for q in queries:
                    t0 = time.perf_counter()
                    n = 0
                    for k in q.tolist():
                        v = txn.get(int(k).to_bytes(4, "big"))
                        if v is not None:
                            n += len(_unvarint(dctx.decompress(v) if compress else v)) // 2
                    times.append(time.perf_counter() - t0)
            env.close()
            rows.append(
                {
                    "layout": name,
                    "bytes_per_posting": size / keys.size,
                    "lookup_ms_p50": 1e3 * float(np.median(times)),
                }
            )
        flat = PostingArrays(keys, packed, ob)
        chosen = flat.smallest().layout
        for layout in ("flat", "csr", "bitmap"):
            arrays = flat if layout == "flat" else flat.to_layout(layout)
            times = []
            for q in queries:
                q = np.sort(q)
                t0 = time.perf_counter()
                arrays.lookup(q)
                times.append(time.perf_counter() - t0)
            rows.append(
                {
                    "layout": f"sorted arrays, {layout}" + (" (used)" if layout == chosen else ""),
                    "bytes_per_posting": arrays.nbytes() / keys.size,
                    "lookup_ms_p50": 1e3 * float(np.median(times)),
                }
            )
        # What zstd would save on the arrays themselves (not used: inflating on every query).
        sorted_delta = np.diff(keys.astype(np.int64), prepend=0).astype("<u4").tobytes()
        z = len(cctx.compress(sorted_delta)) + len(cctx.compress(packed.tobytes()))
        rows.append(
            {
                "layout": "sorted arrays, delta+zstd (not used)",
                "bytes_per_posting": z / keys.size,
                "lookup_ms_p50": float("nan"),
            }
        )
    return rows
