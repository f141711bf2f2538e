from django.db import migrations

STATUSES = [
    ("RUNNING", "Running", False),
    ("IDLE", "Idle", False),
    ("STOPPED", "Stopped", False),
    ("EMERGENCY_STOP", "Emergency stop", True),
    ("FAULT", "Fault", True),
    ("MAINTENANCE_LOCK", "Maintenance lock", True),
    ("SAFETY_INTERLOCK", "Safety interlock", True),
]


def seed(apps, schema_editor):
    # Machines default to IDLE, so the catalogue must exist before any machine.
    MachineStatus = apps.get_model("plant", "MachineStatus")
    for order, (code, label, critical) in enumerate(STATUSES):
        MachineStatus.objects.get_or_create(
            code=code, defaults={"label": label, "is_critical": critical, "display_order": order}
        )


class Migration(migrations.Migration):
    dependencies = [("plant", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
