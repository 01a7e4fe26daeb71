"""The staff and supervisor console: server-rendered pages, no front-end framework, no external assets."""
