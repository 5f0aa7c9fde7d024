"""The export-service REST API (SPEC §6). Never imports dagster: run status comes over HTTP."""
