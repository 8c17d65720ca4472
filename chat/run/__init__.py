"""One Agents SDK run as a ChatEvent iterator: the consumer, its mapping, deadlines and control.

Below the HTTP layer and the stream log: nothing here imports Starlette, ``chat.http`` or
``chat.streams``.
"""
