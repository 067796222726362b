"""The request session commits before the response leaves: a failed commit is never a 2xx."""

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from o2o.db import DbSession
from o2o.errors import install_error_handlers
from tests.conftest import owner_engine


def test_a_commit_that_fails_is_an_error_response_and_nothing_is_saved(engine):
    # The runtime role may not create tables: the owner does (default privileges give the
    # runtime role DML on it).
    with owner_engine().begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE commit_probe (id int PRIMARY KEY, parent int REFERENCES commit_probe (id) "
                "DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/probe", status_code=201)
    def probe(session: DbSession):
        # Violates the deferred foreign key: only COMMIT can notice.
        session.execute(text("INSERT INTO commit_probe VALUES (1, 999)"))
        return {"saved": True}

    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            r = client.post("/probe")
        assert r.status_code >= 500
        assert r.json()["error"]["code"] == "internal_error"
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM commit_probe")) == 0
    finally:
        with owner_engine().begin() as conn:
            conn.execute(text("DROP TABLE commit_probe"))
