"""Activities: all of durable-chat's I/O, each idempotent."""
