"""/openapi.json: a valid OpenAPI 3.1 document of every route, from the code's own Structs."""

from __future__ import annotations

import msgspec
from openapi_spec_validator import validate
from starlette.routing import Mount, Route

from app import create_app
from chat.errors import ERRORS
from chat.openapi import document, document_bytes
from chat.settings import load_settings

_METHODS = {"get", "post", "delete", "put", "patch"}


def _app_operations() -> set[tuple[str, str]]:
    app = create_app(load_settings({}, backend="fake"))
    found = set()
    for route in app.routes:
        if isinstance(route, Mount):
            found.add((route.path + "/{path}", "get"))
        elif isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":  # implied by GET
                    found.add((route.path, method.lower()))
    return found


def _doc_operations() -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document()["paths"].items()
        for method in item
        if method in _METHODS
    }


def test_document_when_validated_then_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on any violation of the 3.1 schema


def test_document_when_compared_with_the_app_then_every_route_and_method() -> None:
    conversations = {
        ("/conversations/{conversation_id}", "get"),
        ("/conversations/{conversation_id}", "delete"),
    }
    # The app may not serve conversations yet; the document already describes them (API.md).
    assert _app_operations() - _doc_operations() == set()
    assert _doc_operations() - _app_operations() <= conversations


def test_stream_responses_when_documented_then_event_stream_naming_the_union() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    union = schemas["ChatEvent"]
    members = {ref["$ref"].rsplit("/", 1)[-1] for ref in union["anyOf"]}
    assert members == {"Delta", "Done", "Error"}
    assert union["discriminator"]["propertyName"] == "type"
    for path, method in (("/chat", "post"), ("/chat/streams/{stream_id}", "get")):
        content = doc["paths"][path][method]["responses"]["200"]["content"]
        frame = {"$ref": "#/components/schemas/ChatEventFrame"}
        assert content["text/event-stream"]["schema"] == frame
    data = schemas["ChatEventFrame"]["properties"]["data"]
    assert data["contentMediaType"] == "application/json"
    assert data["contentSchema"] == {"$ref": "#/components/schemas/ChatEvent"}


def test_request_body_when_documented_then_the_request_struct() -> None:
    doc = document()
    body = doc["paths"]["/chat"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ChatRequest"}
    request = doc["components"]["schemas"]["ChatRequest"]
    assert request["required"] == ["message"]
    assert request["additionalProperties"] is False  # unknown fields are 422


def test_error_statuses_when_documented_then_each_code_under_its_status() -> None:
    paths = document()["paths"]
    start = paths["/chat/streams"]["post"]["responses"]
    chat = paths["/chat"]["post"]["responses"]
    for code, spec in ERRORS.items():
        if code == "method_not_allowed":
            continue  # not an operation's answer: a method no operation has (info says so)
        status = str(spec.status)
        # Errors before a stream on /chat/streams; JSON-mode failures of in-stream codes on /chat.
        responses = chat if code.startswith("upstream_") or code == "cancelled" else start
        assert status in responses, (code, status)
        assert f"`{code}`" in responses[status]["description"], (code, status)
        error_body = responses[status]["content"]["application/json"]["schema"]
        assert error_body == {"$ref": "#/components/schemas/ErrorBody"}


def test_method_not_allowed_when_documented_then_said_in_info() -> None:
    assert "405 `method_not_allowed`" in document()["info"]["description"]


def test_error_codes_when_documented_then_enum_of_every_code() -> None:
    schemas = document()["components"]["schemas"]
    assert set(schemas["ErrorInfo"]["properties"]["code"]["enum"]) == set(ERRORS)
    assert set(schemas["Error"]["properties"]["code"]["enum"]) == set(ERRORS)


def test_document_when_served_then_no_remote_assets() -> None:
    text = document_bytes().decode()
    assert "http://" not in text and "https://" not in text
    assert msgspec.json.decode(document_bytes()) == document()


def test_every_operation_when_documented_then_request_id_header_on_every_response() -> None:
    for item in document()["paths"].values():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            for status, response in operation["responses"].items():
                assert response["headers"]["X-Request-ID"]["required"] is True, (method, status)
