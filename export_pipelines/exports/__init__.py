"""The export types' code: the contract with the stages, the sources, and the modules of the types
with logic of their own (listed in `registry.py`). Importing this package imports none of them."""
