from django.apps import AppConfig


class PlantConfig(AppConfig):
    name = "apps.plant"
    label = "plant"
    verbose_name = "Plant"

    def ready(self):
        # The `in_array` lookup every app may use on long id lists.
        import fleetops.db  # noqa: F401
