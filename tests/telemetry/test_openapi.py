import pytest

from apps.plant.models import Machine, MachineStatus, Sensor

from .conftest import stored

pytestmark = pytest.mark.django_db


def test_it_serves_the_openapi_document_without_login(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert {"/telemetry", "/machines/{code}/latest"} <= set(document["paths"])
    ingest = document["paths"]["/telemetry"]["post"]["responses"]
    assert {"202", "400", "401", "403", "413", "415", "429", "503", "500"} <= set(ingest)


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


def _schemas(client) -> dict:
    return client.get("/api/v1/openapi.json").json()["components"]["schemas"]


def test_it_allows_exactly_the_status_catalogue_and_the_machine_modes(client, plant):
    frame = _schemas(client)["Frame"]["properties"]
    assert set(frame["status"]["enum"]) == set(MachineStatus.objects.values_list("code", flat=True))
    assert set(frame["mode"]["enum"]) == set(Machine.Mode.values)


def test_its_example_batch_posted_as_is_to_the_demo_plant_is_accepted(client, send):
    document = client.get("/api/v1/openapi.json").json()
    example = document["paths"]["/telemetry"]["post"]["requestBody"]["content"]["application/json"][
        "example"
    ]
    for frame in example["frames"]:
        own = set(
            Sensor.objects.filter(machine__code=frame["machine"]).values_list("key", flat=True)
        )
        assert set(frame.get("readings", {})) <= own, frame["machine"]
    response = send(example)
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": len(example["frames"]), "duplicate": False}
    assert stored()[1] == 1  # the batch is recorded (its frames are older than 24 h)
