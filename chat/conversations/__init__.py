"""Conversations: multi-turn history on the Agents SDK's ``Session`` protocol.

- ``turns``: the items we store (one user message, then the answer text) and their turns.
- ``trimming``: which of the newest turns go to the model (turn count, then token budget).
- ``store``: the store protocol (ownership, per-conversation lock, limits) and its errors;
  ``sqlite_store`` (default, one file under ``CHAT_DATA_DIR``) and ``redis_store``.
- ``ownership``: the keyed hash that ties a conversation to the API key that started it.
- ``turn``: one run's hold on a conversation: the history the Runner sees, saving what the user
  saw, releasing the lock.
- ``service``: what the app holds: begin a turn, read, delete, renew locks, purge.
- ``http``: the ``/conversations/{id}`` routes and the mapping of our errors to the contract.
"""
