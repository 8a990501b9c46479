"""vLLM chat service gateway."""

__version__ = "1.0.0"
