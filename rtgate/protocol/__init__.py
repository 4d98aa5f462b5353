"""OpenAI Realtime protocol helpers: cheap event sniffing and the beta-to-GA bridge (pure)."""
