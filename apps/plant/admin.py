from django.contrib import admin, messages
from django.db.models import Count

from . import services
from .models import Gateway, Line, LineMembership, Machine, MachineStatus, Sensor


class SensorInline(admin.TabularInline):
    model = Sensor
    extra = 0
    fields = ["key", "label", "unit", "low_alert", "high_alert"]
    # 100+ sensors per machine: paging the inline is not possible, but a
    # compact tabular form keeps the page usable.
    classes = ["collapse"]


class MembershipInline(admin.TabularInline):
    model = LineMembership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Line)
class LineAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "display_order", "machine_count"]
    list_editable = ["display_order"]
    search_fields = ["code", "name"]
    inlines = [MembershipInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_machines=Count("machines"))

    @admin.display(ordering="_machines", description="machines")
    def machine_count(self, obj):
        return obj._machines


@admin.register(MachineStatus)
class MachineStatusAdmin(admin.ModelAdmin):
    list_display = ["code", "label", "is_critical", "display_order"]
    list_editable = ["is_critical", "display_order"]
    list_filter = ["is_critical"]


@admin.register(Machine)
class MachineAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "name",
        "line",
        "status",
        "maintenance_locked_at",
        "speed",
        "target_speed",
        "mode",
        "last_seen_at",
    ]
    list_filter = ["line", "status", ("maintenance_locked_at", admin.EmptyFieldListFilter), "mode"]
    search_fields = ["code", "name"]
    list_select_related = ["line"]
    readonly_fields = [
        "maintenance_locked_at",
        "maintenance_locked_by",
        "last_seen_at",
        "created_at",
        "updated_at",
    ]
    list_per_page = 100
    show_full_result_count = False
    inlines = [SensorInline]
    actions = ["put_under_maintenance_lock", "release_maintenance_lock"]

    @admin.action(description="Put selected machines under MAINTENANCE_LOCK")
    def put_under_maintenance_lock(self, request, queryset):
        changed = services.machine_set_maintenance_lock(
            machines=list(queryset), actor=request.user, locked=True, host=request.get_host()
        )
        self.message_user(request, f"{len(changed)} machine(s) put under maintenance lock.")

    @admin.action(description="Release MAINTENANCE_LOCK on selected machines")
    def release_maintenance_lock(self, request, queryset):
        changed = services.machine_set_maintenance_lock(
            machines=list(queryset), actor=request.user, locked=False, host=request.get_host()
        )
        self.message_user(request, f"{len(changed)} machine(s) released from maintenance lock.")


@admin.register(Sensor)
class SensorAdmin(admin.ModelAdmin):
    list_display = ["machine", "key", "label", "unit", "low_alert", "high_alert"]
    list_filter = ["machine__line", "unit"]
    search_fields = ["machine__code", "key", "label"]
    list_select_related = ["machine"]
    autocomplete_fields = ["machine"]
    show_full_result_count = False


@admin.register(Gateway)
class GatewayAdmin(admin.ModelAdmin):
    list_display = ["name", "token_hint", "is_active", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "machines__code"]
    filter_horizontal = ["machines"]
    readonly_fields = ["token_hint", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    @admin.display(boolean=True, description="active")
    def is_active(self, obj):
        return obj.is_active

    def save_model(self, request, obj, form, change):
        if not change:
            # The token exists only in this response: it is hashed before saving.
            token = obj.set_new_token()
            messages.warning(
                request,
                f"Token for {obj.name} (shown only now, copy it to the gateway): {token}",
            )
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke selected gateways' tokens")
    def revoke(self, request, queryset):
        for gateway in queryset.filter(revoked_at__isnull=True):
            services.gateway_revoke(gateway=gateway, actor=request.user)
        self.message_user(request, "Revoked.")


@admin.register(LineMembership)
class LineMembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "line", "role"]
    list_filter = ["line", "role"]
    search_fields = ["user__username", "line__code"]
    autocomplete_fields = ["user", "line"]
