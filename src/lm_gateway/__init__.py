"""lm-gateway: a small, fast, self-hosted LLM routing gateway."""

__version__ = "0.1.0"
