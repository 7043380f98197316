"""Aphrodite Echo: an OpenAI-compatible inference server whose models keep learning from production traffic."""

__version__ = "0.1.0"
