from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from apps.audit.client import client_address
from apps.control import services as control
from apps.control.forms import SetpointForm
from apps.live import topics as live_topics
from apps.plant import selectors as plant
from apps.plant.models import Line, LineMembership, Machine, MachineStatus

from . import selectors


def _line_for_viewer(request, code: str) -> tuple[Line, str]:
    line = get_object_or_404(Line, code=code)
    role = plant.line_role_for_user(user=request.user, line=line)
    if role is None:
        raise PermissionDenied(f"You are not a member of line {code}.")
    return line, role


def overview(request):
    lines = list(plant.line_list_for_user(user=request.user))
    context = {
        "cards": selectors.plant_overview(lines=lines),
        # The overview is re-rendered this often: a chip may be that much
        # older than the staleness limit before its next render, and must
        # not turn stale in the browser meanwhile.
        "refresh_s": live_topics.parse(live_topics.GLOBAL).sweep,
    }
    return render(request, "dashboard/overview.html", context)


def _partial(request) -> bool:
    """An htmx request for one piece of the page. A history restore (Back
    after htmx's cache was spent) asks for the whole page, though it also
    carries HX-Request."""
    return bool(request.htmx) and not request.htmx.history_restore_request


def line_detail(request, code: str):
    line, role = _line_for_viewer(request, code)
    can_operate = role == LineMembership.Role.OPERATOR
    context = selectors.line_page(line=line) | {"can_operate": can_operate}
    if can_operate:
        context |= selectors.setpoint_form_context(user=request.user, line=line)
    template = "dashboard/line.html#machine_table" if _partial(request) else "dashboard/line.html"
    return render(request, template, context)


def machine_detail(request, code: str):
    machine = get_object_or_404(Machine.objects.select_related("line"), code=code)
    _line, role = _line_for_viewer(request, machine.line.code)
    context = selectors.machine_page(machine=machine)
    key = request.GET.get("sensor") or "speed"
    context["chart"] = selectors.sensor_chart(machine=machine, key=key)
    context["can_operate"] = role == LineMembership.Role.OPERATOR
    if context["can_operate"]:
        context |= selectors.setpoint_form_context(user=request.user, machine=machine)
    return render(request, "dashboard/machine.html", context)


def equipment(request):
    filters = {
        "line": request.GET.get("line", ""),
        "status": request.GET.get("status", ""),
        "alerts": request.GET.get("alerts") == "1",
        "q": request.GET.get("q", "").strip()[:64],
    }
    try:
        page = max(1, int(request.GET.get("page", 1)))
    except ValueError:
        page = 1
    context = selectors.equipment_list(user=request.user, page=page, **filters)
    query = request.GET.copy()
    query.pop("page", None)
    context |= {
        "filters": filters,
        "query": query.urlencode(),
        "lines": plant.line_list_for_user(user=request.user),
        "statuses": MachineStatus.objects.all(),
    }
    template = (
        "dashboard/equipment.html#equipment_table"
        if _partial(request)
        else "dashboard/equipment.html"
    )
    return render(request, template, context)


@require_POST
def setpoint_submit(request):
    """Submit a setpoint for one machine (target speed and/or mode)."""
    form = SetpointForm(request.POST, user=request.user)
    valid = form.is_valid()
    if not valid and form.machine_not_found() and not request.htmx:
        raise Http404("No such machine.")
    values = {k: request.POST.get(k, "").strip() for k in ("machine", "target_speed", "mode")}
    machine = form.cleaned_data.get("machine")
    on_machine_page = request.POST.get("context") == "machine"
    context = selectors.setpoint_form_context(
        user=request.user,
        line=machine.line if machine else None,
        machine=machine if on_machine_page and machine else None,
        values=values,
    )
    if valid:
        status = _setpoint_send(request, form, context)
    else:
        # 422 for every refused field, an unseen machine too: the page's htmx
        # config swaps 403 and 422 only, so the form shows the message.
        context["errors"], status = [e for errs in form.errors.values() for e in errs], 422
    if not request.htmx:
        if status == 200:
            return redirect(_next_url(request, machine))
        return render(request, "dashboard/setpoint_page.html", context, status=status)
    html = render_to_string("dashboard/_setpoint.html#form", context, request=request)
    if status == 200:
        # The actor sees the pending value at once, before the next push.
        html += _machine_region_oob(machine, on_machine_page)
    return HttpResponse(html, status=status)


def _setpoint_send(request, form: SetpointForm, context: dict) -> int:
    """Ask control for the change; fill the form's context with what came of
    it and return the status to answer with."""
    machine = form.cleaned_data["machine"]
    try:
        tx = control.setpoint_request(
            actor=request.user,
            machine=machine,
            changes=form.changes(),
            host=client_address(request),
        )
    except PermissionDenied as exc:
        context["errors"] = [str(exc)]
        return 403
    except ValidationError as exc:
        context["errors"] = _messages(exc)
        return 422
    context["sent"] = {"machine": machine.code, "tx_id": tx.tx_id}
    context["values"] = {"machine": machine.code}
    return 200


def _next_url(request, machine: Machine) -> str:
    """Where to go after a form post: a same-site `next`, else the machine page."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("dashboard:machine", args=[machine.code])


def _machine_region_oob(machine: Machine, on_machine_page: bool) -> str:
    view = selectors.machine_views(machines=[machine])[0]
    if on_machine_page:
        template = "dashboard/machine.html#machine_header"
    else:
        template = "dashboard/_machine.html#machine_row"
    html = render_to_string(template, {"view": view, "oob": True})
    # A <template> keeps a table row intact while htmx parses the response.
    return f"<template>{html}</template>"


def _messages(exc: ValidationError) -> list[str]:
    if hasattr(exc, "error_dict"):
        return [f"{code}: {m}" for code, errors in exc.message_dict.items() for m in errors]
    return exc.messages
