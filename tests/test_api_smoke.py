"""The API fixture itself: the app answers over real HTTP with the admin key it made."""

from __future__ import annotations

from tests.fixtures.http import ApiServer


def test_fixture_serves_the_app_with_an_admin_key(api: ApiServer) -> None:
    with api.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        sent = c.post(
            "/v1/messages", json={"sendto": "+4915752982212", "body": "hi", "device_id": 260}
        )
        assert sent.status_code == 202, sent.text
        assert c.get(sent.headers["location"]).json()["state"] == "queued"
