"""Adapters, the built-in offline model and tasks, proxy fine-tunes and the worker loop (torch lives here)."""
