"""export-service's Dagster code location (`export_pipelines.definitions`) and its export engine.

Process tuning, set before polars and pyarrow load (an operator's own setting wins): freed memory
goes back to the system within a second (a lower peak RSS) and polars uses one thread (less CPU per row;
figures: docs/performance.md, "Memory and threads of the run worker"). Not settings: nothing
here reads the environment.
"""

import os

os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:1000,muzzy_decay_ms:0")  # polars' jemalloc
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # pyarrow: malloc, no retained pool
os.environ.setdefault("POLARS_MAX_THREADS", "1")  # polars: one thread (docs/performance.md)
