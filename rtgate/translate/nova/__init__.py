"""OpenAI GA <-> Amazon Nova Sonic translation (pure)."""
