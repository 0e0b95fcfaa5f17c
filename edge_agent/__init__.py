"""edgefleet's edge agent: local LLM serving behind an OpenAI-compatible API."""

from edgefleet import __version__

__all__ = ["__version__"]
