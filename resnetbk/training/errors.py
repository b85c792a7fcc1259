"""The trainer's own error: the run cannot go on, and one line says why."""


class TrainingError(RuntimeError):
    """The run cannot go on (too many skipped steps, out of memory at micro-batch 1, a stale build lock)."""
