"""OpenAI GA <-> Gemini Live translation (pure)."""
