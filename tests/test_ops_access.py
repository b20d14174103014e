"""What production does not serve: the API schema and its viewer; /metrics only with its token."""

from __future__ import annotations

from fastapi.testclient import TestClient

from mailing.web.app import create_app


def test_production_serves_neither_the_openapi_schema_nor_the_docs(database, settings_env):
    settings_env(env="production")
    with TestClient(create_app()) as production:
        for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
            assert production.get(path).status_code == 404, path


def test_dev_still_serves_the_schema_for_developers(database):
    with TestClient(create_app()) as dev:
        assert dev.get("/openapi.json").status_code == 200
        assert dev.get("/docs").status_code == 200
