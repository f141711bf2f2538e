from django.contrib.auth.decorators import permission_required
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone

from . import selectors
from .exports import audit_events_xlsx
from .forms import AuditFilterForm

can_read_audit = permission_required(selectors.AUDIT_READ_PERMISSION, raise_exception=True)


def _filters(request) -> tuple[AuditFilterForm, selectors.AuditFilters]:
    form = AuditFilterForm(request.GET or None)
    if form.is_bound and form.is_valid():
        data = {k: v for k, v in form.cleaned_data.items() if v not in (None, "")}
        if "tx" in data:
            data["tx"] = str(data["tx"])
        return form, selectors.AuditFilters(**data)
    return form, selectors.AuditFilters()


@can_read_audit
def audit_list(request):
    form, filters = _filters(request)
    try:
        before = int(request.GET["before"]) if request.GET.get("before") else None
    except ValueError:
        before = None
    events, next_before = selectors.audit_event_page(filters=filters, before=before)
    query = request.GET.copy()
    query.pop("before", None)
    context = {
        "form": form,
        "events": events,
        "next_before": next_before,
        "query": query.urlencode(),
    }
    # A history restore (Back) asks for the whole page, though it carries HX-Request.
    partial = request.htmx and not request.htmx.history_restore_request
    template = "audit/list.html#event_table" if partial else "audit/list.html"
    return render(request, template, context)


@can_read_audit
def audit_export(request):
    _form, filters = _filters(request)
    data, truncated = audit_events_xlsx(events=selectors.audit_event_list(filters=filters))
    response = HttpResponse(
        data, content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.xlsx"'
    if truncated:
        response["X-Export-Truncated"] = "true"
    return response
