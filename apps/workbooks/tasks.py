"""Thin Celery wrappers around the workbook services."""

from celery import shared_task
from django.conf import settings

from . import services


@shared_task(
    acks_late=True,
    # A worker killed mid-parse gives the message back; the run is idempotent.
    reject_on_worker_lost=True,
    time_limit=settings.WORKBOOK_TASK_TIME_LIMIT,
    soft_time_limit=settings.WORKBOOK_TASK_SOFT_TIME_LIMIT,
    ignore_result=True,
)
def workbook_parse_task(upload_id: int) -> None:
    services.upload_process(upload_id=upload_id)


@shared_task(
    acks_late=True,
    # A worker killed mid-write gives the message back; a re-run starts over.
    reject_on_worker_lost=True,
    # Past the soft limit the upload shows the report failed (it can be asked again).
    time_limit=settings.WORKBOOK_TASK_TIME_LIMIT,
    soft_time_limit=settings.WORKBOOK_TASK_SOFT_TIME_LIMIT,
    ignore_result=True,
)
def workbook_report_task(upload_id: int) -> None:
    services.upload_report_build(upload_id=upload_id)


@shared_task(ignore_result=True)
def workbooks_requeue_stuck() -> None:
    # Beat, every WORKBOOK_SWEEP_EVERY_SECONDS: restarts runs whose worker was lost.
    services.uploads_requeue_stuck()
    services.upload_reports_requeue_stuck()
