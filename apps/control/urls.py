from django.urls import path

from . import views

app_name = "control"
urlpatterns = [
    # Under /audit/: audit staff reach it from the audit list, and the links
    # they already keep to it still work.
    path("audit/tx/<uuid:tx_id>/", views.transaction_detail, name="transaction"),
]
