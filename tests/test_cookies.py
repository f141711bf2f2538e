"""The session and CSRF cookies are out of reach of any script on the page."""

import pytest
from django.conf import settings
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_the_login_page_sets_the_csrf_cookie_http_only(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    cookie = response.cookies[settings.CSRF_COOKIE_NAME]
    assert cookie["httponly"] is True


def test_signing_in_sets_the_session_cookie_http_only(client, django_user_model):
    django_user_model.objects.create_user("op", password="pw-long-enough-1")
    client.get(reverse("login"))
    response = client.post(reverse("login"), {"username": "op", "password": "pw-long-enough-1"})
    assert response.status_code == 302
    assert response.cookies[settings.SESSION_COOKIE_NAME]["httponly"] is True


def test_an_htmx_post_with_the_pages_token_header_passes_csrf_with_an_http_only_cookie(
    django_user_model,
):
    from django.test import Client

    django_user_model.objects.create_user("op", password="pw-long-enough-1")
    client = Client(enforce_csrf_checks=True)
    client.login(username="op", password="pw-long-enough-1")
    page = client.get("/")
    token = page.context["csrf_token"]
    refused = client.post(reverse("logout"), HTTP_HX_REQUEST="true")
    assert refused.status_code == 403
    allowed = client.post(reverse("logout"), HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=str(token))
    assert allowed.status_code in (200, 302)
