"""AWS plumbing for the Bedrock provider: event-stream framing, SigV4, credentials, HTTP/2.

Nothing here knows Nova Sonic's events; ``rtgate.translate.nova.translator`` does.
"""
