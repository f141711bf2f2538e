from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command

from apps.plant.models import Line, LineMembership, Machine, MachineStatus, Sensor


def test_it_creates_the_demo_plant_with_its_users(db, settings):
    settings.FLEETOPS_DEMO_PASSWORD = "secret-demo-pw"
    call_command("seed_demo_plant", "--sensors", "120", verbosity=0)

    assert list(Line.objects.values_list("code", flat=True)) == ["01", "02", "03"]
    codes = set(Machine.objects.values_list("code", flat=True))
    expected = {f"m:{base + i}" for base in (400, 500, 600) for i in range(1, 5)}
    assert codes == expected
    assert Machine.objects.get(code="m:503").line.code == "02"
    m401 = Machine.objects.get(code="m:401")
    assert m401.sensors.count() == 120
    assert {"speed", "temp"} <= set(m401.sensors.values_list("key", flat=True))

    for name in ["admin", "operator1", "operator2", "viewer", "auditor"]:
        assert authenticate(username=name, password="secret-demo-pw") is not None, name
    User = get_user_model()
    assert User.objects.get(username="admin").is_superuser
    auditor = User.objects.get(username="auditor")
    assert auditor.is_staff and auditor.has_perm("audit.view_audit_list")

    def roles(username):
        return set(
            LineMembership.objects.filter(user__username=username).values_list("line__code", "role")
        )

    assert roles("operator1") == {("01", "operator")}
    assert roles("operator2") == {("01", "operator"), ("02", "operator")}
    assert roles("viewer") == {("01", "viewer"), ("02", "viewer"), ("03", "viewer")}


def test_it_is_idempotent(db):
    call_command("seed_demo_plant", "--sensors", "10", verbosity=0)
    counts = (Line.objects.count(), Machine.objects.count(), Sensor.objects.count())
    call_command("seed_demo_plant", "--sensors", "10", verbosity=0)
    assert (Line.objects.count(), Machine.objects.count(), Sensor.objects.count()) == counts
    assert LineMembership.objects.filter(user__username="viewer").count() == 3


def test_it_leaves_an_existing_plant_alone_with_if_empty(db, capsys):
    call_command("seed_demo_plant", "--lines", "1", "--sensors", "2")
    call_command("seed_demo_plant", "--if-empty", "--lines", "3")
    assert Line.objects.count() == 1
    assert "already has lines" in capsys.readouterr().out


def test_it_scales_up_for_benchmarks(db):
    call_command("seed_demo_plant", "--lines", "2", "--machines-per-line", "150", "--sensors", "3")
    assert Machine.objects.count() == 300
    assert Machine.objects.filter(code="m:40150").exists()


def test_the_status_catalogue_marks_the_safety_states_critical(db):
    critical = set(MachineStatus.objects.filter(is_critical=True).values_list("code", flat=True))
    assert critical == {"EMERGENCY_STOP", "FAULT", "MAINTENANCE_LOCK", "SAFETY_INTERLOCK"}
    assert set(MachineStatus.objects.filter(is_critical=False).values_list("code", flat=True)) == {
        "RUNNING",
        "IDLE",
        "STOPPED",
    }
