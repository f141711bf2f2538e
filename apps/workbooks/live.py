"""The workbook upload's live topic `upload:<id>`, for apps/live to wire in:

* `upload_topic_allowed(user, upload_id)` for topics.topic_allowed,
* `upload_regions(upload_id)` for regions._RENDERERS (same partials as the
  page and its htmx refresh),
* `upload_changed(upload_id)` tells every live hub the topic changed,
  through `apps.live.push` like every other announcement.
"""

from django.contrib.auth.models import AnonymousUser
from django.template.loader import render_to_string

from apps.live import push


def upload_topic_allowed(user, upload_id) -> bool:
    from .selectors import upload_get_for_user

    if not getattr(user, "is_authenticated", False):
        return False
    return upload_get_for_user(user=user, upload_id=upload_id) is not None


def upload_regions(upload_id) -> dict[str, tuple[str, None]]:
    from .models import WorkbookUpload
    from .selectors import upload_page

    upload = WorkbookUpload.objects.filter(pk=upload_id).first()
    if upload is None:
        return {}
    context = upload_page(upload=upload)
    # Pushed fragments carry no forms, so no request (or CSRF token) is needed.
    context["user"] = AnonymousUser()
    return {
        f"upload-status-{upload.pk}": (
            render_to_string("workbooks/detail.html#upload_status", context),
            None,
        ),
        f"upload-report-{upload.pk}": (
            render_to_string("workbooks/detail.html#upload_report", context),
            None,
        ),
        f"upload-rows-{upload.pk}": (
            render_to_string("workbooks/detail.html#upload_rows", context),
            None,
        ),
    }


def upload_changed(upload_id: int) -> None:
    """Best effort (push never raises): a hub that misses this re-renders
    at its next sweep."""
    push.topic_changed(f"upload:{upload_id}")
