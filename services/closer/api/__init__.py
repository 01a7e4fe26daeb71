"""The closer's HTTP API: one module-level router per concern, included by `app.build()`."""
