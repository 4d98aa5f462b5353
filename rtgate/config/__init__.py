"""Configuration: the model (pure) and the LiteLLM-format loader."""
