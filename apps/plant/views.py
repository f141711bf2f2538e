from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, render

from . import selectors
from .models import Line


def _get_line_for_viewer(request, code: str) -> tuple[Line, str]:
    line = get_object_or_404(Line, code=code)
    role = selectors.line_role_for_user(user=request.user, line=line)
    if role is None:
        raise PermissionDenied(f"You are not a member of line {code}.")
    return line, role


def overview(request):
    lines = selectors.plant_overview_for_user(user=request.user)
    return render(request, "plant/overview.html", {"lines": lines})


def line_detail(request, code: str):
    line, role = _get_line_for_viewer(request, code)
    machines = selectors.machine_list_for_user(user=request.user, line=line)
    template = "plant/line_detail.html#machine_table" if request.htmx else "plant/line_detail.html"
    return render(
        request,
        template,
        {"line": line, "machines": machines, "can_operate": role == "operator"},
    )
