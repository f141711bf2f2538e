from django import forms

from .models import AuditEvent


class AuditFilterForm(forms.Form):
    line = forms.CharField(required=False, max_length=4)
    machine = forms.CharField(required=False, max_length=16)
    actor = forms.CharField(required=False, max_length=150)
    tx = forms.UUIDField(required=False, label="Transaction")
    outcome = forms.ChoiceField(
        required=False, choices=[("", "Any outcome"), *AuditEvent.Outcome.choices]
    )
    since = forms.DateTimeField(
        required=False,
        label="From (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    until = forms.DateTimeField(
        required=False,
        label="Until (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
