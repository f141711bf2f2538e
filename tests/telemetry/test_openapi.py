import pytest

pytestmark = pytest.mark.django_db


def test_it_serves_the_openapi_document_without_login(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert {"/telemetry", "/machines/{code}/latest"} <= set(document["paths"])
    ingest = document["paths"]["/telemetry"]["post"]["responses"]
    assert {"202", "400", "401", "403", "413", "429"} <= set(ingest)


def test_it_resolves_every_reference(client):
    document = client.get("/api/v1/openapi.json").json()
    refs = []

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    for ref in refs:
        target = document
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
