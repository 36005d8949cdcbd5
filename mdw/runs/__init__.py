"""Run folders: atomic files and the run store (store.py), the worker side of a run (context.py),
and the manager that starts, watches and cancels worker processes (manager.py)."""
