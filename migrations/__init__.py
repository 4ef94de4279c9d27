"""Alembic environment and versions: the only way ranktune's schema changes.

Run them with ``ranktune db upgrade``; create a new revision from the repository root with
``alembic revision --autogenerate -m "what changed"`` (``alembic.ini`` points here).
"""
