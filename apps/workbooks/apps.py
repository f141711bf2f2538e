from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured


class WorkbooksConfig(AppConfig):
    name = "apps.workbooks"
    label = "workbooks"
    verbose_name = "Workbooks"

    def ready(self):
        # openpyxl parses workbook XML with defusedxml only when it is
        # installed; without it an upload could expand entities (billion laughs).
        from openpyxl.xml import DEFUSEDXML

        if not DEFUSEDXML:
            raise ImproperlyConfigured("apps.workbooks needs defusedxml installed for openpyxl.")
