from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, render

from apps.control.views import setpoint_form_context
from apps.plant import selectors as plant
from apps.plant.models import Line, Machine, MachineStatus

from . import selectors


def _line_for_viewer(request, code: str) -> tuple[Line, str]:
    line = get_object_or_404(Line, code=code)
    role = plant.line_role_for_user(user=request.user, line=line)
    if role is None:
        raise PermissionDenied(f"You are not a member of line {code}.")
    return line, role


def overview(request):
    lines = list(plant.line_list_for_user(user=request.user))
    return render(
        request, "dashboard/overview.html", {"cards": selectors.plant_overview(lines=lines)}
    )


def line_detail(request, code: str):
    line, role = _line_for_viewer(request, code)
    context = selectors.line_page(line=line) | {"can_operate": role == "operator"}
    if role == "operator":
        context |= setpoint_form_context(user=request.user, line=line)
    template = "dashboard/line.html#machine_table" if request.htmx else "dashboard/line.html"
    return render(request, template, context)


def machine_detail(request, code: str):
    machine = get_object_or_404(Machine.objects.select_related("line"), code=code)
    _line, role = _line_for_viewer(request, machine.line.code)
    context = selectors.machine_page(machine=machine)
    key = request.GET.get("sensor") or "speed"
    context["chart"] = selectors.sensor_chart(machine=machine, key=key)
    context["can_operate"] = role == "operator"
    if role == "operator":
        context |= setpoint_form_context(user=request.user, machine=machine)
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
        "dashboard/equipment.html#equipment_table" if request.htmx else "dashboard/equipment.html"
    )
    return render(request, template, context)
