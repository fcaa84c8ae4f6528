"""``python -m tests.faults.dagster_run PARTITION...``: a Dagster run per video partition that
materialises its ``raw_audio`` and ``fingerprints``, one after another in this process, on the
instance of ``$DAGSTER_HOME`` and the resources the environment configures (what
``citywok_pipeline.definitions`` loads): the Dagster run that tests/faults/test_kills.py kills.
Exits 1 when a run fails."""

from __future__ import annotations

import sys

import dagster as dg

from citywok_pipeline.assets import fingerprints, raw_audio, source_media
from citywok_pipeline.definitions import build_definitions


def main(partitions: list[str]) -> int:
    resources = build_definitions().resources
    with dg.DagsterInstance.get() as instance:
        for partition in partitions:
            result = dg.materialize(
                [source_media, raw_audio, fingerprints],
                selection=[raw_audio, fingerprints],
                partition_key=partition,
                instance=instance,
                resources=resources,
                raise_on_error=False,
            )
            if not result.success:
                print(f"dagster_run: the run of {partition} failed", file=sys.stderr)
                return 1
            print(f"{partition}: run {result.run_id} succeeded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
