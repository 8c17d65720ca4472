"""The run owner: admission, the runs and their release (``runs.py``), the limit on how many
run at once (``admission.py``, steered by ``adaptive_limit.py`` from ``loop_lag.py``), and the
drain at shutdown (``drain.py``). It knows no HTTP: the HTTP layer (``chat.http``) calls it.
"""
