"""The demo page's routes: ``GET /`` and its assets under ``/static``, over real HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support.service import Service

CSP = "default-src 'self'"


@pytest.fixture
def client(fake_service: Service) -> Iterator[httpx.Client]:
    """An HTTP client on the shared fake-model service."""
    with httpx.Client(base_url=fake_service.base_url, timeout=10) as client:
        yield client


def test_index_when_requested_then_html_with_csp_and_no_cache(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert CSP in response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-request-id"]
    assert '<main id="app" data-state="idle"' in response.text


def test_index_when_parsed_then_only_same_origin_assets_and_no_inline_code(
    client: httpx.Client,
) -> None:
    html = client.get("/").text
    # No CDN: every src/href is a path on this origin.
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert not re.match(r"^(?:[a-z]+:)?//", url, re.IGNORECASE), url
    # The CSP forbids inline code, so none may be there to silently not run.
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None
    assert re.search(r"\son[a-z]+=", html) is None
    assert " style=" not in html


@pytest.mark.parametrize(
    ("path", "media_type"),
    [("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")],
)
def test_asset_when_requested_then_served_with_type_and_page_headers(
    client: httpx.Client, path: str, media_type: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["etag"]


def test_asset_when_etag_matches_then_304(client: httpx.Client) -> None:
    etag = client.get("/static/app.js").headers["etag"]
    response = client.get("/static/app.js", headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""


@pytest.mark.parametrize(
    "path", ["/static/missing.js", "/static/", "/static/..%2F..%2Fapp.py", "/static/%2e%2e/app.py"]
)
def test_asset_when_missing_or_outside_the_folder_then_404_contract_json(
    client: httpx.Client, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_index_when_posted_then_405_with_allow(client: httpx.Client) -> None:
    response = client.post("/", content=b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]
