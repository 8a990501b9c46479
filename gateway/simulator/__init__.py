"""A small, fast, vLLM/OpenAI-compatible HTTP server for tests, benchmarks and load runs.

It speaks vLLM's wire format (``/v1/chat/completions`` streaming and not, ``/v1/models``,
``/health``, ``/version``, ``/metrics``), answers with generated or scripted text at a
configurable pace, and injects faults on request (``[[sim:drop_after=3]]`` in the last user
message, an ``X-Sim-Fault`` header, or process-wide defaults). See ``python -m simulator -h``.
"""

__version__ = "1.0.0"
VERSION_STRING = f"{__version__}-simulator"

__all__ = ["VERSION_STRING", "__version__"]
