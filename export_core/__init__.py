"""The Dagster-free core both processes import: settings, the type registry, records, plans, keys,
cell rules and formats, S3 and MongoDB clients, CCPA, retention, the delivery queue, the outbound
address rules and webhooks. Importing it changes nothing in the process (no environment variable,
no Dagster)."""
