"""The HTTP layer, the only one that knows Starlette and sse-starlette.

``checks.py`` holds the pure request checks, ``scope.py`` what the middleware put in the
scope (request id, access record), ``replies.py`` the JSON error replies, ``sse.py`` the event
stream response, ``json_reply.py`` the whole answer as JSON, ``access.py`` a run's access-log
fields; the routes decode, call the service (``chat.service``) and encode: ``chat_routes.py``,
``stream_routes.py``, ``conversation_routes.py``, ``ops_routes.py``; ``routes.py`` lists them.
"""
