"""The OpenAI Realtime GA server side, written once for every translating provider.

Pure. Gemini, Nova Sonic and the mock model mint the GA events their clients
see from what their model produced; this package owns the shapes so the three
cannot drift apart: server events and ids (:mod:`.events`), conversation items
and content parts (:mod:`.items`), one response's event sequence
(:mod:`.response`), usage (:mod:`.usage`) and the session object
(:mod:`.session`).

The two content shapes, as the GA reference types (the openai SDK's
``openai.types.realtime``) define them:

* an item's ``content`` entries are ``output_text`` / ``output_audio`` in
  assistant items and ``input_text`` / ``input_audio`` / ``input_image`` in
  user items;
* the ``part`` of ``response.content_part.added`` / ``.done`` is ``text`` or
  ``audio`` (``ResponseContentPartAddedEvent.Part.type``).
"""
