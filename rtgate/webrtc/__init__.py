"""WebRTC calls rtgate terminates itself (aiortc on one asyncio thread), for any provider.

``terminate.py`` is the call handler the server installs, ``peer.py`` the aiortc side of a
call, ``connection.py`` the call as the relay's client, ``audio.py`` the Opus/PCM bridge and
``loop.py`` the asyncio thread.
"""
