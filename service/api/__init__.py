"""The REST API: thin routes over the repositories, under ``/api/v1``."""

API_PREFIX = "/api/v1"
