"""Dagster-free domain code shared by the API and the Dagster code location."""
