import pytest


def test_it_sends_anonymous_visitors_to_the_login_page(client, plant):
    response = client.get("/lines/01/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=/lines/01/")


def test_the_overview_lists_only_the_users_lines(client_for, operator1):
    body = client_for(operator1).get("/").content.decode()
    assert "m:401" in body and "line:01" in body
    assert "m:601" not in body and "line:03" not in body


def test_the_overview_tells_a_user_without_lines_what_to_do(client_for, outsider):
    body = client_for(outsider).get("/").content.decode()
    assert "not a member of any line" in body


def test_the_line_view_shows_its_machines(client_for, operator1):
    response = client_for(operator1).get("/lines/01/")
    body = response.content.decode()
    assert response.status_code == 200
    for code in ["m:401", "m:402", "m:403", "m:404"]:
        assert code in body
    assert 'id="machine-row-m401"' in body
    assert "You operate this line" in body


def test_a_viewer_watches_but_does_not_operate(client_for, viewer):
    body = client_for(viewer).get("/lines/03/").content.decode()
    assert "m:601" in body and "You watch this line" in body


@pytest.mark.parametrize("user", ["operator1", "outsider"])
def test_a_non_member_gets_403_for_another_lines_page(client_for, plant, user):
    response = client_for(plant.users[user]).get("/lines/03/")
    assert response.status_code == 403


def test_an_unknown_line_is_404(client_for, operator1):
    assert client_for(operator1).get("/lines/99/").status_code == 404


def test_the_htmx_request_gets_only_the_machine_table(client_for, operator1):
    response = client_for(operator1).get("/lines/01/", headers={"HX-Request": "true"})
    body = response.content.decode()
    assert body.lstrip().startswith('<table class="machines" id="machine-table">')
    assert "<html" not in body


def test_pages_carry_a_nonce_based_content_security_policy(client_for, operator1):
    response = client_for(operator1).get("/lines/01/")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self' 'nonce-" in policy
    nonce = policy.split("'nonce-")[1].split("'")[0]
    body = response.content.decode()
    scripts = body.count("<script")
    assert scripts >= 2 and body.count(f'nonce="{nonce}"') == scripts


def test_the_login_page_logs_a_demo_user_in(client, plant):
    response = client.post("/login/", {"username": "operator1", "password": "fleetops-demo"})
    assert response.status_code == 302 and response["Location"] == "/"
    bad = client.post("/login/", {"username": "operator1", "password": "nope"})
    assert "did not match" in bad.content.decode()


def test_the_403_page_says_why_in_plain_words(client_for, operator1):
    body = client_for(operator1).get("/lines/03/").content.decode()
    assert "Not allowed" in body and "not a member of line 03" in body
