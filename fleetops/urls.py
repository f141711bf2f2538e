from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from fleetops import health

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("apps.telemetry.api_urls")),
    path("", include("apps.control.urls")),
    path("audit/", include("apps.audit.urls")),
    path("workbooks/", include("apps.workbooks.urls")),
    path("", include("apps.dashboard.urls")),
]
