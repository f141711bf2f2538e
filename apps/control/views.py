from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_POST

from apps.dashboard import selectors as dashboard
from apps.plant import selectors as plant
from apps.plant.models import Machine

from . import services
from .models import MODES


def setpoint_form_context(*, user, line=None, machine=None, values=None, **extra) -> dict:
    """Context of the setpoint form for a line page or a machine page."""
    if machine is not None:
        context = {"fixed_machine": machine, "context_name": "machine"}
    else:
        context = {
            "setpoint_machines": plant.machine_list_for_user(user=user, line=line).order_by("code"),
            "context_name": "line",
        }
    return context | {"modes": MODES, "values": values or {}} | extra


@require_POST
def setpoint_submit(request):
    """Submit a setpoint for one machine (target speed and/or mode)."""
    code = request.POST.get("machine", "")
    machine = Machine.objects.select_related("line").filter(code=code).first()
    if machine is None or not plant.line_can_view(user=request.user, line=machine.line):
        raise Http404("No such machine.")
    values = {k: request.POST.get(k, "").strip() for k in ("machine", "target_speed", "mode")}
    changes = {f: values[f] for f in ("target_speed", "mode") if values[f]}
    on_machine_page = request.POST.get("context") == "machine"
    context = setpoint_form_context(
        user=request.user,
        line=machine.line,
        machine=machine if on_machine_page else None,
        values=values,
    )
    status = 200
    try:
        tx = services.setpoint_request(
            actor=request.user, machine=machine, changes=changes, host=request.get_host()
        )
    except PermissionDenied as exc:
        context["errors"], status = [str(exc)], 403
    except ValidationError as exc:
        context["errors"], status = _messages(exc), 422
    else:
        context["sent"] = {"machine": machine.code, "tx_id": tx.tx_id}
        context["values"] = {"machine": machine.code}
    if not request.htmx:
        if status == 200:
            return redirect(request.POST.get("next") or f"/machines/{machine.code}/")
        return render(request, "control/setpoint_page.html", context, status=status)
    html = render_to_string("control/_setpoint.html#form", context, request=request)
    if status == 200:
        # The actor sees the pending value at once, before the next push.
        html += _machine_region_oob(machine, on_machine_page)
    return HttpResponse(html, status=status)


def _machine_region_oob(machine: Machine, on_machine_page: bool) -> str:
    view = dashboard.machine_views(machines=[machine])[0]
    if on_machine_page:
        template = "dashboard/machine.html#machine_header"
    else:
        template = "dashboard/_machine.html#machine_row"
    html = render_to_string(template, {"view": view})
    # Mark the region's root element for an out-of-band swap by its id; a
    # <template> keeps a table row intact while htmx parses the response.
    return "<template>" + html.replace(' id="', ' hx-swap-oob="true" id="', 1) + "</template>"


def _messages(exc: ValidationError) -> list[str]:
    if hasattr(exc, "error_dict"):
        return [f"{code}: {m}" for code, errors in exc.message_dict.items() for m in errors]
    return exc.messages
