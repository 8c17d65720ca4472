"""The ``openai`` backend: the official client, and a Model that decodes its stream with msgspec."""
