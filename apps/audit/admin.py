from django.contrib import admin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = [
        "at",
        "actor_label",
        "host",
        "action",
        "machine_code",
        "line_code",
        "field",
        "old_value",
        "new_value",
        "outcome",
    ]
    list_filter = ["outcome", "action", "line_code"]
    search_fields = ["machine_code", "actor_label", "=tx_id"]
    date_hierarchy = "at"
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
