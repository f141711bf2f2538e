from django.apps import AppConfig


class PlantConfig(AppConfig):
    name = "apps.plant"
    label = "plant"
    verbose_name = "Plant"
