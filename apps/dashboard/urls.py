from django.urls import path

from . import views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("lines/<str:code>/", views.line_detail, name="line"),
    path("machines/<str:code>/", views.machine_detail, name="machine"),
    path("equipment/", views.equipment, name="equipment"),
    path("control/setpoint/", views.setpoint_submit, name="setpoint"),
]
