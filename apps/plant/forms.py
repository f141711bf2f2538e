"""Admin forms of the plant whose changes need a deliberate step."""

from django import forms

from .models import Machine, MachineStatus


class MachineStatusForm(forms.ModelForm):
    """A status of the catalogue. Changing its critical flag changes which
    machines show their reported truth over any pending value, so the
    change needs an explicit confirmation on the same form."""

    confirm_critical_change = forms.BooleanField(
        required=False,
        label="I understand this changes what bypasses pending",
        help_text="Required when the critical flag changes.",
    )

    class Meta:
        model = MachineStatus
        fields = ["code", "label", "is_critical", "display_order"]

    def clean(self):
        cleaned = super().clean()
        if "is_critical" in self.changed_data and not cleaned.get("confirm_critical_change"):
            self.add_error(
                "confirm_critical_change",
                "Tick this box to change the critical flag: machines in a critical "
                "status show what they report and never a pending value.",
            )
        return cleaned


class MaintenanceLockForm(forms.Form):
    """The reason a maintenance lock-out is imposed, shown on the machine."""

    reason = forms.CharField(
        max_length=Machine._meta.get_field("maintenance_lock_reason").max_length,
        help_text="Shown on the machine while the lock holds, and kept in the audit trail.",
        error_messages={"required": "A maintenance lock needs a reason."},
    )
