"""An issuer outage longer than ``keys.stale_if_error``, seen by a user and an operator.

The remote key layer runs on an injected monotonic clock (``RemoteKeys``'s
``now``), so hours of outage pass in microseconds; the issuer is a real
:class:`~tests.faults.servers.FaultServer` on 127.0.0.1 that answers 503
during the outage. The chain (DESIGN.md, Keys):

1. the issuer rotates; a token on the new kid makes the app fetch it: 200;
2. the issuer goes down and rotates again; a token on that kid is
   ``key_not_found`` (401), the fetched key keeps serving (counted as
   ``stale_served``), ``/readyz`` stays 200;
3. past ``stale_if_error`` since the last good fetch, the fetched key stops
   serving: 503 ``keys_stale`` on the API, ``/readyz`` 503, the
   ``jwtedge_keys_stale`` gauge at 1; the cooldown still holds fetches back;
4. baked keys never go stale: a genuine baked-kid token gets 200 throughout;
5. the issuer comes back: after the cooldown the next token that needs it
   fetches, and everything turns green again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx2
import pytest

from tests.faults.servers import FaultServer, json_body, respond
from verifier.app import create_app
from verifier.config import AppConfig
from verifier.jwks import parse_jwks
from verifier.remote import RemoteKeys
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

APP = "http://127.0.0.1"
DISCOVERY = "/.well-known/openid-configuration"
STALE_IF_ERROR = 3600.0
COOLDOWN = 30.0


class Clock:
    """The remote layer's monotonic clock; only the test moves it."""

    def __init__(self) -> None:
        self.now = 50_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@dataclass
class Edge:
    """One app over a fresh bake of the issuer, and the handles a test needs."""

    issuer: DevIssuer
    server: FaultServer
    clock: Clock
    remote: RemoteKeys
    client: httpx2.AsyncClient
    baked_kid: str

    def up(self) -> None:
        self.server.route(DISCOVERY, json_body(self.issuer.discovery))
        self.server.route("/jwks", json_body(self.issuer.jwks))

    def down(self) -> None:
        self.server.route("/jwks", respond(503, b'{"error":"maintenance"}'))

    def pair(self, kid: str) -> tuple[str, str]:
        return (
            self.issuer.access_token("ada", kid=kid, ttl=3600),
            self.issuer.id_token("ada", email="ada@example.com", kid=kid),
        )

    async def api(self, kid: str) -> httpx2.Response:
        access, _ = self.pair(kid)
        return await self.client.get("/api/session", headers={"Authorization": f"Bearer {access}"})

    async def page(self, kid: str, path: str = "/") -> httpx2.Response:
        access, id_token = self.pair(kid)
        cookie = f"jwtedge_access={access}; jwtedge_id={id_token}"
        return await self.client.get(path, headers={"Cookie": cookie})

    async def ready(self) -> httpx2.Response:
        return await self.client.get("/readyz")

    async def gauge(self) -> str:
        text = (await self.client.get("/metrics")).text
        return next(line for line in text.splitlines() if line.startswith("jwtedge_keys_stale "))

    async def metrics(self) -> list[str]:
        return (await self.client.get("/metrics")).text.splitlines()


@pytest.fixture
async def edge(server: FaultServer) -> AsyncIterator[Edge]:
    issuer = DevIssuer(issuer=server.url, audience="api", client_id="web")
    config = AppConfig(
        _env_file=None,
        auth={
            "issuer": issuer.issuer,
            "audience": "api",
            "client_id": "web",
            "jwks": parse_jwks(issuer.jwks()),
        },
        keys={
            "remote": "unknown-kid",
            "cooldown": COOLDOWN,
            "stale_if_error": STALE_IF_ERROR,
            "timeout": 0.5,
        },
        endpoints={"jwks_uri": f"{server.url}/jwks"},
    )
    clock = Clock()
    verifier = TokenVerifier.from_config(config)
    remote = RemoteKeys.from_config(config, verifier.keys, now=clock)
    app = create_app(config, verifier=verifier, remote=remote)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url=APP) as client:
        edge = Edge(issuer, server, clock, remote, client, baked_kid=issuer.kids("RS256")[0])
        server.clear()
        edge.up()
        try:
            yield edge
        finally:
            await remote.aclose()


def signed_in(page: httpx2.Response) -> bool:
    assert page.status_code == 200, page.text
    return "Signed in as" in page.text


async def past_the_cap(edge: Edge) -> str:
    """Fetch a rotated key, then keep the issuer down past stale_if_error; its kid."""
    fetched = edge.issuer.rotate()
    assert (await edge.api(fetched)).status_code == 200
    edge.down()
    edge.clock.advance(STALE_IF_ERROR + 1)
    return fetched


# -- the chain ------------------------------------------------------------------------------


async def test_an_outage_longer_than_stale_if_error_and_the_recovery(edge: Edge) -> None:
    remote, clock = edge.remote, edge.clock

    # 1. The issuer rotates; the first token on the new kid fetches it.
    fetched = edge.issuer.rotate()
    first = await edge.api(fetched)
    assert first.status_code == 200
    assert first.json()["user"]["id"] == "ada"
    assert remote.keys_source == "baked+remote"
    assert (await edge.ready()).status_code == 200
    assert await edge.gauge() == "jwtedge_keys_stale 0.0"

    # 2. The issuer goes down (and rotates again, so a kid nobody fetched exists).
    edge.down()
    unseen = edge.issuer.rotate()
    clock.advance(100)
    unknown = await edge.api(unseen)
    assert unknown.status_code == 401
    assert unknown.json()["code"] == "key_not_found"
    assert "HTTP 503" in (remote.last_fetch_error or "")
    # The fetched key keeps serving inside stale_if_error, and that is counted.
    assert (await edge.api(fetched)).status_code == 200
    assert signed_in(await edge.page(fetched))
    ready = await edge.ready()
    assert ready.status_code == 200
    assert ready.json()["keys"]["stale"] is False
    assert ready.json()["remote"]["last_fetch_error"] == remote.last_fetch_error
    # One lookup for the API's access token, two for the page's access and ID tokens.
    assert remote.stats.stale_served == 3
    metrics = await edge.metrics()
    assert "jwtedge_keys_stale_served_total 3.0" in metrics
    assert 'jwtedge_key_fetches_total{result="failed"} 1.0' in metrics
    assert "jwtedge_keys_stale 0.0" in metrics

    # Just inside the cap (measured from the last good fetch): still served.
    clock.advance(STALE_IF_ERROR - 100 - 1)
    assert (await edge.api(fetched)).status_code == 200

    # 3. Past the cap: the fetched key needs the issuer, which is still down.
    clock.advance(2)
    stale = await edge.api(fetched)
    assert stale.status_code == 503
    assert stale.json() == {
        "error": "temporarily_unavailable",
        "code": "keys_stale",
        "message": "signing keys are stale; the issuer could not be reached",
    }
    assert stale.headers["cache-control"] == "no-store"
    assert "www-authenticate" not in stale.headers  # not the user's fault: not a 401
    assert remote.stats.fetches_failed == 2  # this request tried once more
    ready = await edge.ready()
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unready"
    assert body["keys"]["stale"] is True
    assert body["reasons"] == ["the fetched keys are older than keys.stale_if_error"]
    assert await edge.gauge() == "jwtedge_keys_stale 1.0"
    # A kid the issuer has never given us is stale too, not "not found".
    assert (await edge.api(unseen)).json()["code"] == "keys_stale"

    # The cooldown still holds: a flood of stale tokens does not hammer the issuer.
    hits = edge.server.hits("/jwks")
    for _ in range(5):
        assert (await edge.api(fetched)).status_code == 503
    assert edge.server.hits("/jwks") == hits
    assert remote.stats.refetch_suppressed >= 5

    # 4. Baked keys never go stale: the same user on a baked kid is served throughout.
    assert (await edge.api(edge.baked_kid)).status_code == 200
    assert signed_in(await edge.page(edge.baked_kid))

    # 5. The issuer comes back; after the cooldown the next token that needs it fetches.
    edge.up()
    clock.advance(COOLDOWN + 1)
    recovered = await edge.api(fetched)
    assert recovered.status_code == 200
    assert remote.last_fetch_error is None
    assert (await edge.api(unseen)).status_code == 200  # fetched in the same call
    ready = await edge.ready()
    assert ready.status_code == 200
    assert ready.json()["keys"]["stale"] is False
    metrics = await edge.metrics()
    assert "jwtedge_keys_stale 0.0" in metrics
    assert 'jwtedge_key_fetches_total{result="ok"} 2.0' in metrics
    assert 'jwtedge_key_fetches_total{result="failed"} 2.0' in metrics


async def test_a_baked_only_deployment_never_goes_stale_through_any_outage(edge: Edge) -> None:
    edge.down()
    for _ in range(3):
        edge.clock.advance(STALE_IF_ERROR * 10)
        assert (await edge.api(edge.baked_kid)).status_code == 200
        assert signed_in(await edge.page(edge.baked_kid))
        assert (await edge.ready()).status_code == 200
    assert await edge.gauge() == "jwtedge_keys_stale 0.0"
    assert edge.server.hits("/jwks") == 0  # zero network calls for baked kids


async def test_the_cooldown_is_measured_from_the_failed_fetch_not_the_last_good_one(
    edge: Edge,
) -> None:
    fetched = await past_the_cap(edge)
    assert (await edge.api(fetched)).status_code == 503  # fetches, fails
    edge.up()
    edge.clock.advance(COOLDOWN - 1)
    assert (await edge.api(fetched)).status_code == 503  # too soon to ask again
    edge.clock.advance(2)
    assert (await edge.api(fetched)).status_code == 200


# -- pages and forward auth past the cap: DESIGN says 503 --------------------------------------


async def test_a_page_load_needing_stale_keys_answers_503_keys_stale(edge: Edge) -> None:
    fetched = await past_the_cap(edge)

    page = await edge.page(fetched)

    assert page.status_code == 503
    assert "keys_stale" in page.text


async def test_forward_auth_needing_stale_keys_answers_503_not_401(edge: Edge) -> None:
    fetched = await past_the_cap(edge)

    verdict = await edge.page(fetched, "/auth/verify")

    assert verdict.status_code == 503


async def test_readyz_recovers_without_user_traffic_once_the_issuer_is_back(edge: Edge) -> None:
    fetched = await past_the_cap(edge)
    assert (await edge.api(fetched)).status_code == 503
    assert (await edge.ready()).status_code == 503

    # The load balancer stops sending users; only probes arrive.
    edge.up()
    edge.clock.advance(COOLDOWN + 1)
    probes: list[int] = []
    for _ in range(3):
        probes.append((await edge.ready()).status_code)
        edge.clock.advance(COOLDOWN + 1)

    assert probes[-1] == 200
