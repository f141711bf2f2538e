from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from apps.dashboard import selectors as dashboard
from apps.plant import selectors as plant
from apps.plant.models import Machine

from . import services
from .forms import SetpointForm


def setpoint_form_context(*, user, line=None, machine=None, values=None, **extra) -> dict:
    """Context of the setpoint form for a line page or a machine page."""
    if machine is not None:
        context = {"fixed_machine": machine, "context_name": "machine"}
    else:
        context = {
            "setpoint_machines": plant.machine_list_for_user(user=user, line=line).order_by("code"),
            "context_name": "line",
        }
    return context | {"modes": Machine.Mode.values, "values": values or {}} | extra


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
    context = setpoint_form_context(
        user=request.user,
        line=machine.line if machine else None,
        machine=machine if on_machine_page and machine else None,
        values=values,
    )
    status = 200
    if not valid:
        # 422 for every refused field, an unseen machine too: the page's htmx
        # config swaps 403 and 422 only, so the form shows the message.
        context["errors"], status = [e for errs in form.errors.values() for e in errs], 422
    else:
        try:
            tx = services.setpoint_request(
                actor=request.user, machine=machine, changes=form.changes(), host=request.get_host()
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
            return redirect(_next_url(request, machine))
        return render(request, "control/setpoint_page.html", context, status=status)
    html = render_to_string("control/_setpoint.html#form", context, request=request)
    if status == 200:
        # The actor sees the pending value at once, before the next push.
        html += _machine_region_oob(machine, on_machine_page)
    return HttpResponse(html, status=status)


def _next_url(request, machine: Machine) -> str:
    """Where to go after a form post: a same-site `next`, else the machine page."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return f"/machines/{machine.code}/"


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
