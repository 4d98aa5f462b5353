"""SigV4 for the Bedrock bidirectional stream: the HTTP request and the chained event signatures.

The request signature comes from botocore (``SigV4Auth``), driven with an
explicit timestamp so it is testable. The per-event signature has no installed
implementation, so it is written here (AWS's event-stream signing, described at
https://docs.aws.amazon.com/transcribe/latest/dg/streaming-setting-up.html; after smithy-python's
``AsyncEventSigner``): every event-stream message rtgate sends is wrapped in an
envelope whose headers are ``:date`` and ``:chunk-signature``::

    string_to_sign = "AWS4-HMAC-SHA256-PAYLOAD" \n amz_date \n scope \n prior_signature_hex
                     \n sha256_hex(encoded :date header) \n sha256_hex(inner message)

The first ``prior_signature`` is the request's ``Signature=`` value; each
event's signature seeds the next, so events must be signed in sending order.
The stream ends with one envelope around an empty payload.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

import attrs
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as _BotoCredentials

from rtgate.aws.eventstream import Timestamp, encode_header, encode_raw

STREAMING_PAYLOAD: Final = "STREAMING-AWS4-HMAC-SHA256-EVENTS"
"""``X-Amz-Content-SHA256`` of an event-stream request (and its canonical payload hash)."""
_AMZ_DATE: Final = "%Y%m%dT%H%M%SZ"


@attrs.frozen(repr=False)
class AwsCredentials:
    """An access key pair and optional session token. The repr shows the key id's last 4 only."""

    access_key: str
    secret_key: str
    token: str | None = None

    def __repr__(self) -> str:
        return f"AwsCredentials(access_key='...{self.access_key[-4:]}', secret_key='***')"

    def secrets(self) -> tuple[str, ...]:
        """Values that must be scrubbed from any text leaving the process."""
        return tuple(v for v in (self.access_key, self.secret_key, self.token) if v)


def amz_date(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime(_AMZ_DATE)


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The derived SigV4 key for ``date`` (YYYYMMDD), region and service."""
    key = hmac.new(f"AWS4{secret_key}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


@attrs.frozen
class SignedRequest:
    headers: dict[str, str]
    """Every header to send, ``Authorization`` and ``X-Amz-*`` included."""
    signature: str
    """Hex ``Signature=`` of the request: the seed of the event chain."""


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    credentials: AwsCredentials,
    *,
    region: str,
    service: str,
    now: dt.datetime,
    payload_hash: str | None = STREAMING_PAYLOAD,
) -> SignedRequest:
    """Sign an HTTP request with botocore's SigV4 at the instant ``now``.

    ``url`` carries the path exactly as it goes on the wire (the model id
    already percent-encoded); the canonical path encodes it once more, as
    SigV4 requires for every service but S3. ``payload_hash`` becomes the
    ``X-Amz-Content-SHA256`` header; None leaves it out and hashes the empty body.
    """
    boto_creds = _BotoCredentials(credentials.access_key, credentials.secret_key, credentials.token)
    request = AWSRequest(method=method, url=url, headers=dict(headers))
    if payload_hash is not None:
        request.headers["X-Amz-Content-SHA256"] = payload_hash
    signer = SigV4Auth(boto_creds, service, region)
    # SigV4Auth.add_auth reads the wall clock itself; these are the same steps with ours.
    request.context["timestamp"] = amz_date(now)
    signer._modify_request_before_signing(request)
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    signature = signer.signature(string_to_sign, request)
    signer._inject_signature_to_request(request, signature)
    return SignedRequest(
        headers={k: str(v) for k, v in request.headers.items()}, signature=signature
    )


class EventSigner:
    """Wraps each outgoing event-stream message in a signed envelope, chaining signatures."""

    def __init__(
        self, credentials: AwsCredentials, *, region: str, service: str, seed_signature: str
    ) -> None:
        self._secret = credentials.secret_key
        self._region = region
        self._service = service
        self._prior = seed_signature
        self._keys: dict[str, bytes] = {}
        self.finished = False
        """True once the empty end-of-stream envelope is signed (nothing may follow)."""

    @property
    def prior_signature(self) -> str:
        return self._prior

    def sign(self, message: bytes, now: dt.datetime) -> bytes:
        """The encoded envelope carrying ``message`` (an encoded event-stream message)."""
        if self.finished:
            raise RuntimeError("the event stream was already ended with an empty signed frame")
        # Signatures carry whole seconds; the :date header is that instant in ms.
        seconds = int(now.timestamp())
        stamp = amz_date(dt.datetime.fromtimestamp(seconds, dt.UTC))
        date_header = encode_header(":date", Timestamp(seconds * 1000))
        day = stamp[:8]
        key = self._keys.get(day)
        if key is None:
            self._keys = {day: signing_key(self._secret, day, self._region, self._service)}
            key = self._keys[day]
        string_to_sign = "\n".join(
            (
                "AWS4-HMAC-SHA256-PAYLOAD",
                stamp,
                f"{day}/{self._region}/{self._service}/aws4_request",
                self._prior,
                hashlib.sha256(date_header).hexdigest(),
                hashlib.sha256(message).hexdigest(),
            )
        )
        signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).digest()
        self._prior = signature.hex()
        headers = date_header + encode_header(":chunk-signature", signature)
        return encode_raw(headers, message)

    def sign_empty(self, now: dt.datetime) -> bytes:
        """The final envelope with an empty payload; the chain ends here."""
        frame = self.sign(b"", now)
        self.finished = True
        return frame
