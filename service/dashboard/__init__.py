"""The dashboard's single-page app (index.html, scripts, style), served by ``routes.dashboard``."""
