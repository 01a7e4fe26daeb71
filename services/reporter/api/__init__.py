"""The reporter's HTTP entry points: one module-level router per module, included by services.reporter.app."""
