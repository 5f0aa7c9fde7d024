"""Developer tools outside the Dagster code location: the local-stack supervisor (`make run`) and the
demo/bench data generator. The code location never imports this package."""
