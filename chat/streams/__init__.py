"""Runs decoupled from their readers: the stream manager and the stream logs it writes into.

Below the HTTP layer: nothing here imports Starlette or ``chat.http``.
"""
