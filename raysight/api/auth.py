"""AWS Signature Version 4, checked by recomputing it with botocore's own signer over the
request as received: the same canonical request, string to sign and key derivation that
signed it on the client, so nothing here re-implements the algorithm.

Key pairs come from a file in the AWS shared-credentials format (the one boto3 reads), so a
local boto3 works with no set-up.
"""
from __future__ import annotations

import calendar
import configparser
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass

from raysight.api.wire import AwsError

# AWS's IAM signing reference: a request must reach AWS within five minutes of its time
# stamp (against replays), either way.
MAX_SKEW_S = 5 * 60
# Headers that choose what a request does: each one sent must be signed, so none can be
# swapped after signing (host always; the operation and the body's type when present).
MUST_SIGN = ("x-amz-target", "content-type")
AUTH_RE = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
                     r"SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})$")


def default_credentials_file() -> str:
    return os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")


def load_keys(path: str) -> dict[str, str]:
    """access key id → secret, from every profile of the file."""
    parser = configparser.RawConfigParser()
    if not parser.read(path):
        raise FileNotFoundError(f"credentials file {path} not found (the AWS shared-credentials format: "
                                "[profile] aws_access_key_id = ... aws_secret_access_key = ...)")
    keys = {}
    for section in parser.sections():
        key, secret = parser.get(section, "aws_access_key_id", fallback=None), \
            parser.get(section, "aws_secret_access_key", fallback=None)
        if key and secret:
            keys[key.strip()] = secret.strip()
    if not keys:
        raise ValueError(f"{path} has no profile with aws_access_key_id and aws_secret_access_key")
    return keys


@dataclass(frozen=True)
class Caller:
    access_key: str
    region: str
    service: str


def verify(keys: dict[str, str], method: str, url: str, headers: dict[str, str], body: bytes,
           services: tuple[str, ...], now: float | None = None) -> Caller:
    """The caller of a correctly signed, fresh request; otherwise the AwsError AWS answers."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    lower = {k.lower(): v for k, v in headers.items()}
    header = lower.get("authorization")
    if not header:
        raise AwsError("MissingAuthenticationTokenException", "Missing Authentication Token", 403)
    match = AUTH_RE.match(header.strip())
    if not match:
        raise AwsError("IncompleteSignatureException", "Authorization header requires 'Credential', "
                                                       "'SignedHeaders' and 'Signature' (AWS4-HMAC-SHA256)", 403)
    access_key, day, region, service, signed, signature = match.groups()
    if access_key not in keys:
        raise AwsError("UnrecognizedClientException", "The security token included in the request is invalid.", 403)
    if service not in services:
        raise AwsError("InvalidSignatureException", f"Credential should be scoped to a valid service: "
                                                    f"{', '.join(services)}, not '{service}'", 403)
    stamp = lower.get("x-amz-date", "")
    try:
        when = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise AwsError("IncompleteSignatureException", "X-Amz-Date is missing or not YYYYMMDDTHHMMSSZ", 403) from None
    now = time.time() if now is None else now
    if abs(now - when) > MAX_SKEW_S:
        raise AwsError("InvalidSignatureException",
                       f"Signature expired: {stamp} is now earlier than "
                       f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now - MAX_SKEW_S))} "
                       f"({time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))} - 5 min.)"
                       if when < now else f"Signature not yet current: {stamp} is still later than "
                       f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now + MAX_SKEW_S))}", 403)
    names = signed.split(";")
    if "host" not in names or stamp[:8] != day:
        raise AwsError("InvalidSignatureException", "the signature must cover 'host' and its scope must be the "
                                                    "day of X-Amz-Date", 403)
    unsigned = [h for h in MUST_SIGN if h in lower and h not in names]
    if unsigned:
        raise AwsError("InvalidSignatureException", f"the signature must cover the {', '.join(unsigned)} "
                                                    f"header{'s' if len(unsigned) > 1 else ''} sent", 403)
    claimed = lower.get("x-amz-content-sha256")
    if claimed and claimed != hashlib.sha256(body).hexdigest():  # the header, not the body, is what was signed
        raise AwsError("InvalidSignatureException", "x-amz-content-sha256 does not match the request body", 403)
    request = AWSRequest(method=method, url=url, data=body,
                         headers={name: lower[name] for name in names if name in lower})
    request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(access_key, keys[access_key]), service, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, signature):
        raise AwsError("InvalidSignatureException", "The request signature we calculated does not match the "
                                                    "signature you provided. Check your AWS Secret Access Key and "
                                                    "signing method.", 403)
    return Caller(access_key, region, service)
