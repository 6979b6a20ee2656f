import pytest
from django.core.management import call_command


def test_openapi_schema_validates(tmp_path):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert "/api/v1/auth/login/" in out.read_text()


@pytest.mark.django_db
def test_schema_and_swagger_ui_are_served(client):
    schema = client.get("/api/v1/schema/")
    docs = client.get("/api/docs/")
    assert schema.status_code == 200
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content
    assert b"cdn." not in docs.content
