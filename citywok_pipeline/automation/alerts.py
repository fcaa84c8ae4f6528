"""Failed runs, said out loud: a log line per failed run with its assets and partition, and a
POST to ``CITYWOK_ALERT_WEBHOOK`` when one is configured."""

import json
import urllib.error
import urllib.request
from typing import Any

import dagster as dg
from pydantic import Field


class AlertWebhookResource(dg.ConfigurableResource):
    """Where failed runs are posted as JSON (``CITYWOK_ALERT_WEBHOOK``); none: only logged."""

    url: str | None = Field(default=None, description="An http(s) URL (CITYWOK_ALERT_WEBHOOK).")
    timeout_s: float = 10.0

    def post(self, payload: dict[str, Any]) -> None:
        """POST ``payload``; ``OSError`` (with the reason) when the hook does not take it."""
        if not self.url:
            return
        if not self.url.startswith(("http://", "https://")):
            raise OSError(f"CITYWOK_ALERT_WEBHOOK must be an http(s) URL, got {self.url!r}")
        request = urllib.request.Request(
            self.url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            if response.status >= 300:
                raise OSError(f"{self.url} answered {response.status}")


def failure_report(context: dg.RunFailureSensorContext) -> dict[str, Any]:
    """What a failed run was doing: its job, assets (the steps that failed first), partition
    and the reason."""
    run = context.dagster_run
    failed_steps = [e.step_key for e in context.get_step_failure_events() if e.step_key]
    reasons = [
        e.step_failure_data.user_failure_data.description
        if e.step_failure_data.user_failure_data is not None
        and e.step_failure_data.user_failure_data.description
        else (e.step_failure_data.error.message.strip() if e.step_failure_data.error else "")
        for e in context.get_step_failure_events()
    ]
    selected = sorted(k.to_user_string() for k in run.asset_selection or ())
    return {
        "run_id": run.run_id,
        "job": run.job_name,
        "assets": failed_steps or selected,
        "partition": run.tags.get("dagster/partition"),
        "backfill": run.tags.get("dagster/backfill"),
        "reason": "; ".join(r for r in reasons if r) or (context.failure_event.message or ""),
    }


@dg.run_failure_sensor(
    name="run_failure_alert_sensor",
    monitor_all_code_locations=False,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Logs every failed run with its assets and partition; posts it to CITYWOK_ALERT_WEBHOOK when set.",
)
def run_failure_alert_sensor(
    context: dg.RunFailureSensorContext, alerts: AlertWebhookResource
) -> None:
    report = failure_report(context)
    context.log.error(
        f"run {report['run_id']} of {report['job']} failed: assets {', '.join(report['assets'])}"
        f"{' partition ' + report['partition'] if report['partition'] else ''}: {report['reason']}"
    )
    try:
        alerts.post(report)
    except (OSError, urllib.error.URLError) as exc:
        # The run's failure is already logged above; a hook that is down must not stop the
        # sensor from reporting the next one.
        context.log.warning(f"could not post the alert to the webhook: {exc}")
