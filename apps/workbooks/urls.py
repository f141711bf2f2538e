from django.urls import path

from . import views

app_name = "workbooks"
urlpatterns = [
    path("", views.upload, name="upload"),
    path("template.xlsx", views.upload_template, name="template"),
    path("<int:pk>/", views.upload_detail, name="upload-detail"),
    path("<int:pk>/report.xlsx", views.upload_error_report, name="error-report"),
]
