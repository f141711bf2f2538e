import tempfile
from pathlib import Path

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from . import precheck

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def size_limit_message(limit: int) -> str:
    return f"The file is larger than the upload limit of {limit / (1024 * 1024):g} MB."


class WorkbookUploadForm(forms.Form):
    file = forms.FileField(
        label="Workbook (.xlsx)",
        widget=forms.ClearableFileInput(attrs={"accept": f".xlsx,{XLSX_MIME}"}),
    )
    validate_only = forms.BooleanField(
        required=False,
        label="Validate only",
        help_text="Check every row and show the result; no setpoint is changed.",
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        limit = settings.WORKBOOK_MAX_UPLOAD_BYTES
        if upload.size > limit:
            raise ValidationError(size_limit_message(limit), code="too_big")
        try:
            precheck.check_extension(upload.name)
            # The cheap content checks (magic bytes, zip directory, kind of
            # package) answer at once; the task repeats them in depth.
            if hasattr(upload, "temporary_file_path"):
                precheck.precheck(Path(upload.temporary_file_path()))
            else:
                with tempfile.NamedTemporaryFile(suffix=".xlsx") as copy:
                    for chunk in upload.chunks():
                        copy.write(chunk)
                    copy.flush()
                    precheck.precheck(Path(copy.name))
        except precheck.WorkbookRejected as exc:
            raise ValidationError(exc.message, code=exc.code) from None
        return upload
