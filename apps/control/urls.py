from django.urls import path

from . import views

app_name = "control"
urlpatterns = [
    path("setpoint/", views.setpoint_submit, name="setpoint"),
]
