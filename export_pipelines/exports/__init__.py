"""One module per export type: `extract(ctx)` writes raw Parquet parts, `transform(ctx)` yields rows."""
