from django.urls import path

from . import views

app_name = "plant"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("lines/<str:code>/", views.line_detail, name="line-detail"),
]
