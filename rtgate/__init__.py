"""rtgate: a gateway for LLM realtime (speech-to-speech) WebSocket APIs."""

__version__ = "0.1.0"
