"""gdpr_purge_schedule: every day, one purge run per region (on by default in prod)."""

from collections.abc import Sequence

from dagster import (
    DefaultScheduleStatus,
    JobDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

# 03:30 UTC, after the nightly traffic low; one run per region, so regions fail and retry independently.
PURGE_CRON = "30 3 * * *"


def build_gdpr_purge_schedule(job: JobDefinition, regions: Sequence[str], *, enabled: bool) -> ScheduleDefinition:
    @schedule(name="gdpr_purge_schedule", cron_schedule=PURGE_CRON, job=job, execution_timezone="UTC",
              default_status=DefaultScheduleStatus.RUNNING if enabled else DefaultScheduleStatus.STOPPED)
    def gdpr_purge_schedule(context: ScheduleEvaluationContext):
        """Requests the retention purge of every region for the scheduled day."""
        day = context.scheduled_execution_time.strftime("%Y-%m-%d")
        for region in regions:
            yield RunRequest(run_key=f"purge-{region}-{day}", partition_key=region)

    return gdpr_purge_schedule
