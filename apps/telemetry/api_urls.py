from django.urls import path

from . import views

urlpatterns = [
    path("telemetry", views.telemetry_ingest, name="telemetry-ingest"),
    path(
        "machines/<str:code>/latest", views.machine_latest_detail, name="telemetry-machine-latest"
    ),
    path("gateway", views.gateway_detail, name="telemetry-gateway"),
    path("openapi.json", views.openapi_document, name="telemetry-openapi"),
]
