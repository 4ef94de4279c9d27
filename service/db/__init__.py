"""Database: typed SQLAlchemy models, engines, migrations and the repositories that commit."""
