"""The ``ranktune`` command line, one module per verb group.

- ``plan``: ``plan``;  ``train``: ``train``;  ``demo``: ``demo``
- ``server``: ``serve``, ``db upgrade``, ``token create|revoke|list`` (straight to the database)
- ``client``: ``worker``, ``submit``, ``status``, ``export`` (over HTTP)
- ``common``: the consoles and the one-line error wrapper; ``app``: the Typer app that registers them

Bad input exits with code 2 and one line naming the problem. ``python -m ranktune`` runs ``main``.
"""

from ranktune.service.cli.app import app, main

__all__ = ["app", "main"]
