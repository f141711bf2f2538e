from django.contrib import admin

from .models import WorkbookUpload


@admin.register(WorkbookUpload)
class WorkbookUploadAdmin(admin.ModelAdmin):
    """Read-only: uploads are written by the upload page and the task."""

    list_display = [
        "id",
        "original_filename",
        "uploader",
        "status",
        "report_status",
        "validate_only",
        "created_at",
    ]
    list_filter = ["status", "report_status", "validate_only"]
    search_fields = ["original_filename", "uploader__username", "sha256"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
