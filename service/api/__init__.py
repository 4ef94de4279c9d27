"""The REST API: thin routes over the repositories, under ``/api/v1``."""
