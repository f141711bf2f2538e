from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import Count
from django.template.response import TemplateResponse

from apps.audit.client import client_address

from . import changes, services
from .forms import MachineStatusForm, MaintenanceLockForm
from .models import Gateway, Line, LineMembership, Machine, MachineStatus, Sensor


def _who(request) -> dict:
    """The actor and client address every audited admin write records."""
    return {"actor": request.user, "host": client_address(request)}


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

    def save_formset(self, request, form, formset, change):
        # Through plant.changes, so each membership change is audited.
        # Deletes first: a member removed and added again must not clash.
        who, rows = _who(request), formset.save(commit=False)
        changes.membership_delete(memberships=formset.deleted_objects, **who)
        for membership in rows:
            changes.membership_save(membership=membership, **who)


@admin.register(MachineStatus)
class MachineStatusAdmin(admin.ModelAdmin):
    # The critical flag is not list-editable: it decides what bypasses
    # pending, so it changes on the status's own page, confirmed and audited.
    form = MachineStatusForm
    fields = ["code", "label", "is_critical", "confirm_critical_change", "display_order"]
    list_display = ["code", "label", "is_critical", "display_order"]
    list_editable = ["display_order"]
    list_filter = ["is_critical"]

    def save_model(self, request, obj, form, change):
        changes.status_save(status=obj, **_who(request))

    def delete_model(self, request, obj):
        changes.status_delete(statuses=[obj], **_who(request))

    def delete_queryset(self, request, queryset):
        changes.status_delete(statuses=list(queryset), **_who(request))


REPORTED_FIELDS = ["status", "speed", "target_speed", "mode"]


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
    # The lock-out and its reason change only through the audited actions.
    readonly_fields = [
        "maintenance_locked_at",
        "maintenance_locked_by",
        "maintenance_lock_reason",
        "last_seen_at",
        "created_at",
        "updated_at",
    ]
    list_per_page = 100
    show_full_result_count = False
    inlines = [SensorInline]
    actions = ["put_under_maintenance_lock", "release_maintenance_lock"]

    def get_readonly_fields(self, request, obj=None):
        # What a machine reports is its truth: an edit here would change it
        # unaudited behind the machine's back (a FAULT edited to RUNNING).
        if obj is None:
            return self.readonly_fields
        return [*self.readonly_fields, *REPORTED_FIELDS]

    def save_formset(self, request, form, formset, change):
        # Through plant.changes, so each alert limit edited here is audited.
        who, rows = _who(request), formset.save(commit=False)
        changes.sensor_delete(sensors=formset.deleted_objects, **who)
        for sensor in rows:
            changes.sensor_save(sensor=sensor, **who)

    @admin.action(description="Put selected machines under MAINTENANCE_LOCK")
    def put_under_maintenance_lock(self, request, queryset):
        # An action with input, the admin's way: the first post shows a page
        # asking for the reason; that page posts back the same action with
        # `post` set, and only then does anything change.
        form = MaintenanceLockForm(request.POST if "post" in request.POST else None)
        if form.is_valid():
            changed = services.machine_set_maintenance_lock(
                machines=list(queryset),
                locked=True,
                reason=form.cleaned_data["reason"],
                **_who(request),
            )
            self.message_user(request, f"{len(changed)} machine(s) put under maintenance lock.")
            return None
        if form.is_bound:
            self.message_user(
                request, "A maintenance lock needs a reason: nothing was locked.", messages.ERROR
            )
        return self._maintenance_lock_page(request, queryset, form)

    def _maintenance_lock_page(self, request, queryset, form):
        return TemplateResponse(
            request,
            "admin/plant/machine/maintenance_lock.html",
            {
                **self.admin_site.each_context(request),
                "title": "Put machines under maintenance lock",
                "opts": self.model._meta,
                "form": form,
                "machine_count": queryset.count(),
                "machines": queryset[:20],
                "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
                "select_across": request.POST.get("select_across", "0"),
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
            },
        )

    @admin.action(description="Release MAINTENANCE_LOCK on selected machines")
    def release_maintenance_lock(self, request, queryset):
        changed = services.machine_set_maintenance_lock(
            machines=list(queryset), locked=False, **_who(request)
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

    def save_model(self, request, obj, form, change):
        changes.sensor_save(sensor=obj, **_who(request))

    def delete_model(self, request, obj):
        changes.sensor_delete(sensors=[obj], **_who(request))

    def delete_queryset(self, request, queryset):
        changes.sensor_delete(sensors=list(queryset.select_related("machine")), **_who(request))


@admin.register(Gateway)
class GatewayAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "token_hint",
        "is_active",
        "created_at",
        "last_used_at",
        "clock_offset",
        "revoked_at",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "machines__code"]
    filter_horizontal = ["machines"]
    readonly_fields = [
        "token_hint",
        "created_at",
        "last_used_at",
        "clock_offset",
        "clock_offset_at",
        "revoked_at",
    ]
    actions = ["revoke"]

    @admin.display(boolean=True, description="active")
    def is_active(self, obj):
        return obj.is_active

    @admin.display(description="clock offset", ordering="clock_offset_s")
    def clock_offset(self, obj):
        if obj.clock_offset_s is None:
            return "-"
        text = f"{obj.clock_offset_s:+.1f} s"
        if not obj.clock_is_off:
            return text
        return f"{text} ({'clock ahead' if obj.clock_offset_s < 0 else 'lagging'})"

    def save_model(self, request, obj, form, change):
        token = changes.gateway_save(gateway=obj, **_who(request))
        if token:
            # The token exists only in this response: only its hash is stored.
            messages.warning(
                request,
                f"Token for {obj.name} (shown only now, copy it to the gateway): {token}",
            )

    def save_related(self, request, form, formsets, change):
        # The only relation is the machines the token may command: audited.
        changes.gateway_machines_set(
            gateway=form.instance, machines=form.cleaned_data["machines"], **_who(request)
        )

    def delete_model(self, request, obj):
        changes.gateway_delete(gateways=[obj], **_who(request))

    def delete_queryset(self, request, queryset):
        changes.gateway_delete(gateways=list(queryset), **_who(request))

    @admin.action(description="Revoke selected gateways' tokens")
    def revoke(self, request, queryset):
        for gateway in queryset.filter(revoked_at__isnull=True):
            services.gateway_revoke(gateway=gateway, **_who(request))
        self.message_user(request, "Revoked.")


@admin.register(LineMembership)
class LineMembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "line", "role"]
    list_filter = ["line", "role"]
    search_fields = ["user__username", "line__code"]
    autocomplete_fields = ["user", "line"]
    list_select_related = ["user", "line"]

    def save_model(self, request, obj, form, change):
        changes.membership_save(membership=obj, **_who(request))

    def delete_model(self, request, obj):
        changes.membership_delete(memberships=[obj], **_who(request))

    def delete_queryset(self, request, queryset):
        changes.membership_delete(
            memberships=list(queryset.select_related("user", "line")), **_who(request)
        )
