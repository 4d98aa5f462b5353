"""Translators: pure per-session protocol logic between OpenAI GA clients and each provider."""
