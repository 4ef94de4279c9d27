"""The ranktune service: settings, database, REST API, lease protocol, dashboard and CLI.

Never imports torch at module import time; model work is imported lazily from ``trainer``.
"""
