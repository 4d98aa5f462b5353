"""SigV4: request signatures and chained event signatures against published vectors."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pytest
from botocore.eventstream import EventStreamBuffer

from rtgate.aws.eventstream import encode_message
from rtgate.aws.sigv4 import STREAMING_PAYLOAD, AwsCredentials, EventSigner, sign_request
from rtgate.providers.bedrock import request_path

# AWS SigV4 test suite, "get-vanilla" (docs.aws.amazon.com, signature-v4-test-suite).
SUITE_CREDS = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
SUITE_TIME = dt.datetime(2015, 8, 30, 12, 36, tzinfo=dt.UTC)


def test_request_signature_matches_the_aws_test_suite() -> None:
    signed = sign_request(
        "GET",
        "https://example.amazonaws.com/",
        {"Host": "example.amazonaws.com"},
        SUITE_CREDS,
        region="us-east-1",
        service="service",
        now=SUITE_TIME,
        payload_hash=None,
    )
    assert signed.signature == "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    assert signed.headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def test_bedrock_request_encodes_the_model_path_twice_and_signs_the_streaming_marker() -> None:
    creds = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "tok/en=")
    path = request_path("amazon.nova-sonic-v1:0")
    assert path == "/model/amazon.nova-sonic-v1%3A0/invoke-with-bidirectional-stream"
    host = "bedrock-runtime.us-east-1.amazonaws.com"
    signed = sign_request(
        "POST",
        f"https://{host}{path}",
        {"host": host, "content-type": "application/vnd.amazon.eventstream"},
        creds,
        region="us-east-1",
        service="bedrock",
        now=SUITE_TIME,
    )
    # The canonical request, written out by hand from the SigV4 specification.
    canonical = "\n".join(
        [
            "POST",
            "/model/amazon.nova-sonic-v1%253A0/invoke-with-bidirectional-stream",
            "",
            "content-type:application/vnd.amazon.eventstream\n"
            f"host:{host}\n"
            f"x-amz-content-sha256:{STREAMING_PAYLOAD}\n"
            "x-amz-date:20150830T123600Z\n"
            "x-amz-security-token:tok/en=\n",
            "content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token",
            STREAMING_PAYLOAD,
        ]
    )
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            "20150830T123600Z",
            "20150830/us-east-1/bedrock/aws4_request",
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = _hmac(("AWS4" + creds.secret_key).encode(), "20150830")
    for part in ("us-east-1", "bedrock", "aws4_request"):
        key = _hmac(key, part)
    assert signed.signature == hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    assert signed.headers["X-Amz-Security-Token"] == "tok/en="
    assert signed.headers["X-Amz-Content-SHA256"] == STREAMING_PAYLOAD


# aws-sdk-kotlin / smithy-kotlin EventStreamSigningTest.testSignPayload.
KOTLIN_SEED = hashlib.sha256(b"last message sts").hexdigest()
KOTLIN_TIME = dt.datetime.fromtimestamp(123_456_789, dt.UTC) + dt.timedelta(microseconds=1)


def test_event_signature_matches_the_sdk_vector() -> None:
    signer = EventSigner(
        AwsCredentials("fake access key", "fake secret key"),
        region="us-east-1",
        service="testservice",
        seed_signature=KOTLIN_SEED,
    )
    inner = encode_message({"some-header": "value"}, b"test payload")
    envelope = signer.sign(inner, KOTLIN_TIME)
    buffer = EventStreamBuffer()
    buffer.add_data(envelope)
    [message] = list(buffer)
    assert message.payload == inner
    assert message.headers[":date"] == 123_456_789_000  # whole seconds, in ms
    expected = "1ea04a4f6becd85ae3e38e379ffaf4bb95042603f209512476cc6416868b31ee"
    assert message.headers[":chunk-signature"].hex() == expected
    assert signer.prior_signature == expected


def test_signatures_chain_and_the_empty_frame_ends_the_stream() -> None:
    creds = AwsCredentials("fake access key", "fake secret key")
    a = EventSigner(creds, region="us-east-1", service="testservice", seed_signature=KOTLIN_SEED)
    inner = encode_message({"some-header": "value"}, b"test payload")
    a.sign(inner, KOTLIN_TIME)
    second = a.prior_signature
    a.sign(inner, KOTLIN_TIME)
    # The same message signed from a different seed gives a different signature: it chains.
    b = EventSigner(creds, region="us-east-1", service="testservice", seed_signature=second)
    b.sign(inner, KOTLIN_TIME)
    assert a.prior_signature == b.prior_signature != second
    end = a.sign_empty(KOTLIN_TIME)
    buffer = EventStreamBuffer()
    buffer.add_data(end)
    [message] = list(buffer)
    assert message.payload == b""
    with pytest.raises(RuntimeError):
        a.sign(inner, KOTLIN_TIME)


def test_credentials_repr_hides_the_secret() -> None:
    creds = AwsCredentials("AKIAABCDEFGHIJKLMNOP", "very-secret-value", "session-token-value")
    text = repr(creds)
    assert "very-secret" not in text and "session-token" not in text and "ABCDEFGHIJ" not in text
