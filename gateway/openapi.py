"""The OpenAPI 3.1 description of the gateway's HTTP endpoints, served at ``/openapi.json``.

Written by hand next to the routes (``tests/test_gateway_http.py`` checks that every
route is described), so the document says what the code does, including the SSE
stream and the WebSocket that generators cannot describe.
"""

from __future__ import annotations

__all__ = ["openapi_document"]

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_RECS = {
    "type": "object",
    "properties": {
        "type": {"const": "recommendations"},
        "user_id": {"type": "string"},
        "seq": {"type": "integer", "description": "the user's event counter; the SSE event id"},
        "rec_id": {"type": "string", "description": "id of this list, for impression and click events"},
        "variant": {"type": "string", "description": "the experiment variant that ranked it"},
        "trigger_event_id": {"type": "string"},
        "event_ts": {"type": "number"},
        "emitted_at": {"type": "number"},
        "strategy": {"type": "string"},
        "model_version": {"type": "string"},
        "items": {"type": "array", "items": {
            "type": "object", "properties": {"item_id": {"type": "string"}, "score": {"type": "number"}},
            "required": ["item_id", "score"]}},
    },
    "required": ["user_id", "seq", "items"],
}
_EVENT = {
    "type": "object",
    "description": "An input event as in docs/contracts.md; ts may be omitted (server time is used).",
    "properties": {
        "event_id": {"type": "string"}, "ts": {"type": ["number", "string"]},
        "user_id": {"type": "string"}, "session_id": {"type": "string"},
        "type": {"enum": ["view", "click", "hover", "scroll", "dwell", "add_to_cart", "remove_from_cart",
                          "wishlist", "purchase", "rating", "filter", "search", "impression",
                          "consent", "erase"]},
        "item_id": {"type": "string"}, "value": {"type": "number"}, "category": {"type": "string"},
        "context": {"type": "object"}, "consent": {"type": "boolean"},
    },
    "required": ["event_id", "user_id", "type"],
}
_USER = {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}
_TOKEN = {"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
          "description": "user token, when an Authorization header cannot be set"}
_EXCLUDE = {"name": "exclude", "in": "query", "required": False,
            "schema": {"type": "array", "maxItems": 20,
                       "items": {"type": "string", "minLength": 1, "maxLength": 256}},
            "style": "form", "explode": True,
            "description": "an item id to leave out of the lists sent, typically the product the "
                           "page shows, so a product page never recommends itself; repeat it for "
                           "several (at most 20). The other items keep their order; the stored "
                           "list is not changed."}
_SECURITY = [{"bearer": []}, {"tokenQuery": []}]
_WRITE_SECURITY = [{"bearer": []}, {"tokenQuery": []}, {"apiKey": []}, {}]
_ACCESS = ("Events of anonymous ids (prefix `STREAMREC_GATEWAY_ANONYMOUS_PREFIX`, `anon-` by "
           "default) need no credentials. `consent` and `erase` events, events carrying a "
           "`consent` field, and every event of an identified user need that user's token or "
           "an API key of the site's back end; one event that is not allowed refuses the whole "
           "request and nothing of it is queued. Clients are limited in requests and in events "
           "per second (API-key callers are not).")
_ERASURE = ("Queues an `erase` event for the user carrying the receipt in `context.receipt`. "
            "When the worker has removed the user's state, lists and profile, it appends an "
            "entry to the Redis stream `{prefix}:erasures` with the fields `receipt`, `user_id` "
            "(the pseudonym when user ids are pseudonymised) and `completed_at` (unix seconds).")


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _denials() -> dict:
    return {"401": _json(_ERROR, "token missing, malformed, forged or expired"),
            "403": _json(_ERROR, "token of another user")}


def _read_denials() -> dict:
    return {"400": _json(_ERROR, "bad `exclude`: more than 20 ids, or an empty or too long one"),
            **_denials()}


def openapi_document(server_url: str | None = None) -> dict:
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "streamrec gateway", "version": "1",
                 "description": "Collects browser events into Kafka and pushes each user's live "
                                "recommendation list from Redis to the browser."},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "`streamrec token USER_ID` prints one for testing"},
                "tokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "a key from STREAMREC_GATEWAY_API_KEYS (the site's back "
                                          "end; header only)"},
            },
            "schemas": {"Event": _EVENT, "Recommendations": _RECS, "Error": _ERROR},
        },
        "paths": {
            "/v1/events": {"post": {
                "summary": "Send one event or an array of events",
                "description": _ACCESS, "security": _WRITE_SECURITY,
                "parameters": [_TOKEN, {"name": "sent_at", "in": "query", "required": False,
                                "schema": {"type": "number"},
                                "description": "client clock at send time (unix s), corrects skewed ts"}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"oneOf": [
                        {"$ref": "#/components/schemas/Event"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}]}},
                    "text/plain": {"schema": {"type": "string", "description": "the same JSON"}}}},
                "responses": {
                    "202": _json({"type": "object", "properties": {
                        "accepted": {"type": "integer"}, "rejected": {"type": "integer"},
                        "errors": {"type": "array", "items": {"type": "object", "properties": {
                            "index": {"type": "integer"}, "event_id": {"type": ["string", "null"]},
                            "reason": {"type": "string"}, "detail": {"type": "string"}}}}}},
                        "queued for Kafka; rejected events are listed with a reason"),
                    "400": _json(_ERROR, "body is not JSON"),
                    "401": _json(_ERROR, "no credentials where they are needed, or a token or "
                                         "API key that is not valid; nothing was queued"),
                    "403": _json(_ERROR, "an event of a user other than the token's; nothing was queued"),
                    "413": _json(_ERROR, "body or batch too large"),
                    "429": _json(_ERROR, "per-client limit of requests or events; see Retry-After"),
                    "503": _json(_ERROR, "Kafka unreachable or queue full; see Retry-After"),
                }}},
            "/v1/users/{user_id}": {"delete": {
                "summary": "Erase the user: all state, lists and profile",
                "description": _ERASURE, "parameters": [_USER, _TOKEN],
                "security": [{"bearer": []}, {"tokenQuery": []}, {"apiKey": []}],
                "responses": {
                    "202": _json({"type": "object", "properties": {"receipt": {"type": "string"}},
                                  "required": ["receipt"]}, "queued; watch {prefix}:erasures for the receipt"),
                    "400": _json(_ERROR, "not a valid user id"),
                    "429": _json(_ERROR, "per-client rate limit; see Retry-After"),
                    "503": _json(_ERROR, "Kafka unreachable or queue full: nothing queued, retry"),
                    **_denials()}}},
            "/v1/users/{user_id}/recommendations": {"get": {
                "summary": "The user's latest recommendation list",
                "parameters": [_USER, _TOKEN, _EXCLUDE], "security": _SECURITY,
                "responses": {"200": _json({"$ref": "#/components/schemas/Recommendations"}, "the list"),
                              "404": _json(_ERROR, "no list yet"), **_read_denials()}}},
            "/v1/users/{user_id}/recommendations/stream": {"get": {
                "summary": "Server-Sent Events: a message each time the user's list changes",
                "description": "Each message is `id: <seq>` and `data: <Recommendations JSON>`; "
                               "a `: heartbeat` comment when idle; `event: token-expired` before "
                               "the stream ends at the token's expiry. Resume with Last-Event-ID. "
                               "With `exclude`, every message leaves those items out; a list "
                               "that differs from the last one sent only in them is not sent.",
                "parameters": [_USER, _TOKEN, _EXCLUDE,
                               {"name": "Last-Event-ID", "in": "header", "required": False,
                                "schema": {"type": "string"}}],
                "security": _SECURITY,
                "responses": {"200": {"description": "event stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                              "429": _json(_ERROR, "too many connections for this user"),
                              "503": _json(_ERROR, "too many connections to this gateway"),
                              **_read_denials()}}},
            "/v1/users/{user_id}/recommendations/ws": {"get": {
                "summary": "WebSocket: the same messages as JSON text frames",
                "description": "Upgrade to WebSocket. `{\"type\": \"heartbeat\"}` when idle; resume "
                               "with ?last_event_id=<seq>. `exclude` as on the SSE stream. Refused "
                               "with 400/401/403 before the upgrade.",
                "parameters": [_USER, _TOKEN, _EXCLUDE,
                               {"name": "last_event_id", "in": "query", "required": False,
                                "schema": {"type": "integer"}}],
                "security": _SECURITY,
                "responses": {"101": {"description": "switching protocols"}, **_read_denials()}}},
            "/v1/tracker.js": {"get": {"summary": "The JS tracker (an ES module)",
                                       "responses": {"200": {"description": "JavaScript"}}}},
            "/healthz": {"get": {"summary": "Liveness, with the state of Kafka, Redis and the push reader",
                                 "responses": {"200": _json({"type": "object"}, "always, while the process runs")}}},
            "/readyz": {"get": {"summary": "Readiness: 200 when Kafka and Redis answer",
                                "responses": {"200": _json({"type": "object"}, "ready"),
                                              "503": _json({"type": "object"}, "not ready")}}},
            "/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/demo/": {"get": {"summary": "The demo storefront page",
                               "responses": {"200": {"description": "HTML"}}}},
            "/demo/catalog": {"get": {"summary": "Catalog items shown by the storefront",
                                      "responses": {"200": _json({"type": "array"}, "items")}}},
            "/demo/session": {"get": {"summary": "Demo mode only: a new user id and its token",
                                      "responses": {"200": _json({"type": "object"}, "user_id, token"),
                                                    "404": _json(_ERROR, "not in demo mode")}}},
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
