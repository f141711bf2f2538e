from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET

from apps.audit.client import client_address

from . import selectors, services, writers
from .forms import WorkbookUploadForm, size_limit_message

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# Room for the multipart envelope and the other fields around the file.
MULTIPART_OVERHEAD = 64 * 1024


def _require_operator(request) -> None:
    if not selectors.upload_can_create(user=request.user):
        raise PermissionDenied("Uploading setpoint workbooks is for operators of a line.")


def _upload_page(request, form, status=200, too_big=""):
    uploads = selectors.upload_list_for_user(user=request.user)[:20]
    context = {
        "form": form,
        "uploads": uploads,
        "max_mb": settings.WORKBOOK_MAX_UPLOAD_BYTES / 2**20,
        "too_big": too_big,
    }
    return render(request, "workbooks/upload.html", context, status=status)


@csrf_exempt
def upload(request):
    """Checks that need no body run first: the CSRF check would otherwise
    parse (and spool to disk) an oversized multipart body before we could
    refuse it. The CSRF check itself runs in `_upload`."""
    _require_operator(request)
    if request.method == "POST":
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.WORKBOOK_MAX_UPLOAD_BYTES
        if length > limit + MULTIPART_OVERHEAD:
            return _upload_page(
                request, WorkbookUploadForm(), status=413, too_big=size_limit_message(limit)
            )
    return _upload(request)


@csrf_protect
def _upload(request):
    if request.method == "POST":
        form = WorkbookUploadForm(request.POST, request.FILES)
        if form.is_valid():
            new = services.upload_create(
                uploader=request.user,
                file=form.cleaned_data["file"],
                validate_only=form.cleaned_data["validate_only"],
                host=client_address(request),
            )
            return redirect("workbooks:upload-detail", pk=new.pk)
        return _upload_page(request, form, status=400)
    return _upload_page(request, WorkbookUploadForm())


@require_GET
def upload_detail(request, pk: int):
    upload = selectors.upload_get_for_user(user=request.user, upload_id=pk)
    if upload is None:
        raise Http404("No such upload.")
    context = selectors.upload_page(upload=upload)
    template = "workbooks/detail.html#upload_poll" if request.htmx else "workbooks/detail.html"
    return render(request, template, context)


@require_GET
def upload_template(request):
    _require_operator(request)
    content = writers.template_workbook(
        machines=selectors.template_machines_for_user(user=request.user)
    )
    response = HttpResponse(content, content_type=XLSX)
    response["Content-Disposition"] = 'attachment; filename="fleetops-setpoints-template.xlsx"'
    return response


@require_GET
def upload_error_report(request, pk: int):
    """Serve the stored report. None ready (an upload parsed before reports
    were kept, a failed report, a stored one gone): queue one and send the
    user to the upload's page, where its progress and then the link show."""
    upload = selectors.upload_get_for_user(user=request.user, upload_id=pk)
    if upload is None or not upload.has_report:
        raise Http404("No report for this upload.")
    path = services.upload_report_path(upload)
    if path is not None:
        try:
            report = open(path, "rb")
        except FileNotFoundError:
            pass
        else:
            return FileResponse(
                report,
                as_attachment=True,
                filename=f"upload-{upload.pk}-report.xlsx",
                content_type=XLSX,
            )
    if not services.upload_report_request(upload=upload):
        messages.info(request, "The report is still being prepared; the link appears when ready.")
    elif selectors.upload_report_ready(upload_id=upload.pk):  # eager Celery: written already
        messages.info(request, "The report has been prepared again: download it below.")
    else:
        messages.info(
            request,
            "The report is being prepared; the download link appears on this page "
            "when it is ready.",
        )
    return redirect("workbooks:upload-detail", pk=upload.pk)
