from django import forms
from django.core.exceptions import ValidationError

from apps.plant import selectors as plant
from apps.plant import validators
from apps.plant.models import Machine

MODE_CHOICES = [("", "(unchanged)"), *Machine.Mode.choices]


class SetpointForm(forms.Form):
    """One machine's setpoint from the console form; an empty field is unchanged."""

    machine = forms.CharField(max_length=16)
    target_speed = forms.CharField(required=False)
    mode = forms.CharField(required=False, widget=forms.Select(choices=MODE_CHOICES))
    context = forms.CharField(required=False)
    next = forms.CharField(required=False)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_machine(self) -> Machine:
        code = self.cleaned_data["machine"]
        machine = Machine.objects.select_related("line").filter(code=code).first()
        # A machine on a line the user may not see is answered like a missing one.
        if machine is None or not plant.line_can_view(user=self.user, line=machine.line):
            raise ValidationError(f"No such machine: {code}.", code="not_found")
        return machine

    def clean_target_speed(self) -> int | None:
        value = self.cleaned_data["target_speed"]
        return validators.target_speed_clean(value) if value else None

    def clean_mode(self) -> str | None:
        value = self.cleaned_data["mode"]
        return validators.mode_clean(value) if value else None

    def machine_not_found(self) -> bool:
        return any(e.code == "not_found" for e in self.errors.as_data().get("machine", []))

    def changes(self) -> dict:
        data = self.cleaned_data
        return {f: data[f] for f in ("target_speed", "mode") if data.get(f) is not None}
