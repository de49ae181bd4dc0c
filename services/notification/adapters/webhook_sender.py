"""Posting a webhook over HTTP (httpx): resolve the host, refuse addresses the URL policy forbids, and
connect to the very address that was checked (the Host header and TLS SNI keep the name, so the
certificate is still verified against it) — a DNS answer that changes between check and connect
(rebinding) cannot point the request at an internal address. Redirects are not followed (a 3xx is a
failed attempt). Every outcome is an AttemptResult; nothing raises for a receiver's fault."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Mapping

import httpx

from services.notification.domain.webhooks import (
    DELIVERY_TIMEOUT_S,
    MAX_RECORDED_RESPONSE_CHARS,
    AttemptResult,
    IpAddress,
    UrlPolicy,
    WebhookUrl,
    check_addresses,
    check_url,
    literal_address,
)
from services.runtime.errors import ValidationError

USER_AGENT = "Molbridge-Webhooks/1"

# httpx logs every request's URL at INFO; a partner's URL may carry a token in its query: only warnings.
logging.getLogger("httpx").setLevel(logging.WARNING)


async def resolve(target: WebhookUrl) -> list[IpAddress]:
    """The host's addresses (the literal itself for an IP); [] when it does not resolve."""
    literal = literal_address(target.host)
    if literal is not None:
        return [literal]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    addresses: list[IpAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def checked_target(url: str, policy: UrlPolicy) -> tuple[WebhookUrl, list[IpAddress]]:
    """The URL's form and every address its host resolves to, checked; raises ValidationError."""
    target = check_url(url, policy)
    addresses = await resolve(target)
    check_addresses(target, addresses, policy)
    return target, addresses


class HttpWebhookSender:
    def __init__(self, policy: UrlPolicy, *, timeout: float = DELIVERY_TIMEOUT_S) -> None:
        self.policy = policy
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment would bypass the address checks
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

    async def check(self, url: str) -> WebhookUrl:
        """For registration: the URL is acceptable now (it is checked again before every attempt)."""
        target, _ = await checked_target(url, self.policy)
        return target

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        loop = asyncio.get_running_loop()
        started = loop.time()

        def elapsed_ms() -> int:
            return int((loop.time() - started) * 1000)

        try:
            # httpx's timeout bounds each read and write; this bounds the whole attempt, name resolution
            # included (a receiver that drips its answer must not outlive the worker's lease).
            async with asyncio.timeout(self._timeout):
                target, addresses = await checked_target(url, self.policy)
                response = await self._client.post(
                    httpx.URL(target.url).copy_with(host=str(addresses[0])),
                    content=body,
                    headers={
                        **headers,
                        "Host": httpx.URL(target.url).netloc.decode("ascii"),
                        "Content-Type": "application/json",
                        "User-Agent": USER_AGENT,
                    },
                    extensions={"sni_hostname": target.host},
                )
        except ValidationError as refused:
            return AttemptResult(error=f"refused: {refused.message}", duration_ms=elapsed_ms())
        except (httpx.TimeoutException, TimeoutError):
            return AttemptResult(error=f"timeout after {self._timeout:g} s", duration_ms=elapsed_ms())
        except httpx.HTTPError as error:
            return AttemptResult(error=f"{type(error).__name__}: {error}"[:300], duration_ms=elapsed_ms())
        return AttemptResult(
            status_code=response.status_code,
            retry_after=response.headers.get("Retry-After"),
            response_body=response.text[:MAX_RECORDED_RESPONSE_CHARS],
            duration_ms=elapsed_ms(),
        )

    async def close(self) -> None:
        await self._client.aclose()
