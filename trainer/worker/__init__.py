"""The worker: pulls trials from the server over HTTP, runs proxy fine-tunes, reports results.

Layers: ``loop`` (claim → train → report, signals) → ``client`` (HTTP with backoff) and ``spool``
(finished results on disk until the server has them).
"""
