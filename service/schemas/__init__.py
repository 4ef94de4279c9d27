"""Request and response bodies of the REST API (pydantic): ``XCreate``/``XPublic`` per entity."""
