"""Run the pipeline in this process, without a daemon: what `make demo` and the tests do.

One pass evaluates the real sensors in order (media_scan_sensor, then season_snapshot_sensor),
applies what they return to the instance (partitions added and deleted, observations
reported) and executes every run they request in-process, one after another. It is the same
code path the daemon drives, minus the daemon's queue: like the daemon, a run key already
used by a run of the same sensor is not run again.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

DEFAULT_INSTANCE_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


@dataclass(frozen=True)
class RunOutcome:
    """One run the sensors asked for, and how it went."""

    job: str
    partition: str
    run_id: str
    success: bool
    error: str | None = None


@dataclass
class PassReport:
    """What one pass did."""

    skipped: dict[str, str] = field(default_factory=dict)
    added_partitions: dict[str, list[str]] = field(default_factory=dict)
    deleted_partitions: dict[str, list[str]] = field(default_factory=dict)
    runs: list[RunOutcome] = field(default_factory=list)

    def runs_of(self, job: str) -> list[RunOutcome]:
        return [r for r in self.runs if r.job == job]

    @property
    def failures(self) -> list[RunOutcome]:
        return [r for r in self.runs if not r.success]


def prepare_dagster_home(path: str | Path) -> Path:
    """Create a DAGSTER_HOME for the embedded instance (SQLite storage, no telemetry).

    Its dagster.yaml is the repository's (``dagster.yaml`` at the root) when this package
    runs from a checkout, a minimal equivalent otherwise.
    """
    home = Path(path).absolute()
    home.mkdir(parents=True, exist_ok=True)
    repo_yaml = Path(__file__).resolve().parents[1] / "dagster.yaml"
    target = home / "dagster.yaml"
    if repo_yaml.is_file():
        if not target.is_file() or target.read_bytes() != repo_yaml.read_bytes():
            shutil.copyfile(repo_yaml, target)
    elif not target.is_file():
        target.write_text(DEFAULT_INSTANCE_YAML)
    return home


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                messages.append(data.user_failure_data.description)
            elif data.error is not None:
                messages.append(data.error.message.strip())
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                messages.append(f"check {evaluation.check_name} failed: {evaluation.description}")
    return "; ".join(messages) or "the run failed"


def _ran(instance: dg.DagsterInstance, sensor: str, run_key: str | None) -> bool:
    if not run_key:
        return False
    tags = {"dagster/sensor_name": sensor, "dagster/run_key": run_key}
    return bool(instance.get_run_records(filters=dg.RunsFilter(tags=tags), limit=1))


def evaluate_sensor(
    defs: dg.Definitions, instance: dg.DagsterInstance, name: str, *, cursor: str | None = None
) -> dg.SensorResult:
    """Evaluate a sensor once against ``instance``; a SkipReason comes back as a SensorResult."""
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, sensor_name=name, resources=defs.resources
    ) as context:
        result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return dg.SensorResult(skip_reason=result)
    if result is None:
        return dg.SensorResult()
    if not isinstance(result, dg.SensorResult):
        return dg.SensorResult(run_requests=list(result))
    return result


def apply_sensor_result(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    name: str,
    result: dg.SensorResult,
    report: PassReport,
    *,
    progress: Callable[[str], None] | None = None,
    log_level: str = "WARNING",
) -> None:
    """Do what the daemon does with a sensor's answer: partitions, events, then the runs."""
    if result.skip_reason is not None:
        report.skipped[name] = result.skip_reason.skip_message or ""
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
            report.added_partitions.setdefault(request.partitions_def_name, []).extend(
                request.partition_keys
            )
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
            report.deleted_partitions.setdefault(request.partitions_def_name, []).extend(
                request.partition_keys
            )
    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)
    job_name = defs.resolve_sensor_def(name).job_name
    # Like the daemon, run a run key once: the sensors repeat requests they cannot confirm.
    requests = [r for r in result.run_requests or [] if not _ran(instance, name, r.run_key)]
    for i, request in enumerate(requests, start=1):
        job = defs.resolve_job_def(request.job_name or job_name)
        if progress:
            progress(f"{job.name} {request.partition_key} ({i}/{len(requests)})")
        tags = {**request.tags, "dagster/sensor_name": name}
        if request.run_key:
            tags["dagster/run_key"] = request.run_key
        run = job.execute_in_process(
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            instance=instance,
            partition_key=request.partition_key,
            tags=tags,
            raise_on_error=False,
        )
        report.runs.append(
            RunOutcome(
                job=job.name,
                partition=request.partition_key or "",
                run_id=run.run_id,
                success=run.success,
                error=None if run.success else _failure_message(run),
            )
        )


def run_pipeline_once(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    *,
    progress: Callable[[str], None] | None = None,
    log_level: str = "WARNING",
) -> PassReport:
    """Discover the media source and materialise what is new, then the seasons it changed."""
    report = PassReport()
    for name in ("media_scan_sensor", "season_snapshot_sensor"):
        result = evaluate_sensor(defs, instance, name)
        apply_sensor_result(
            defs, instance, name, result, report, progress=progress, log_level=log_level
        )
    return report
