from celery import shared_task

from .services import telemetry_prune


@shared_task(ignore_result=True)
def telemetry_prune_task() -> dict:
    """Drop history older than 24 h and create the next hourly partitions;
    beat runs it every 5 minutes (README: Storage and retention)."""
    result = telemetry_prune()
    return {**result, "partitions_dropped": len(result["partitions_dropped"])}
