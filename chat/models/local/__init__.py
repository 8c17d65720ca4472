"""The embedded llama.cpp model: the Model, its engine in the server, and the worker process.

Importing this package imports nothing: the worker process starts from ``worker.py`` and must
not pull in the server's modules, and the server must never import ``llama_cpp``.
"""
