"""One module per group of figures of issue 5; each exposes ``run(ctx) -> list[Figure]``."""
