"""The soak, short: 12 s of mixed load on real servers while the issuer flaps.

One run (:func:`tests.load.soak.run_soak`) serves every test here; each test
asserts one invariant of its summary. ``JWTEDGE_SOAK=long`` runs the long
profile instead (60 s, 200 connections). Figures during the flaps (lost
grants, replays, reuse, revoked families) are what DESIGN's Refresh section
predicts: they are printed, not asserted.

Nothing here depends on the machine's speed: the phases end on counts (the
steady phase once every busy family has been refreshed, the flapping once
every down mode has had its turn), so a loaded machine makes the run longer,
and every timeout the run keeps (``refresh.timeout`` while the issuer is up,
each client request) is a generous deadline, not a figure the tests assert.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from tests.e2e.servers import app_config, dev_issuer, serve_app
from tests.load.soak import (
    FD_TOLERANCE,
    RSS_BOUND_MB,
    format_table,
    profile_from_env,
    run_soak,
)
from verifier.app import create_app

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def summary() -> dict[str, Any]:
    result = run_soak(profile_from_env())
    print("\n" + format_table(result))  # shown with -s, and on failure
    return result


def test_soak_answers_no_5xx(summary: dict[str, Any]) -> None:
    assert summary["requests"]["5xx"] == 0, summary["requests"]["by_status"]


def test_soak_mixes_every_kind_of_request(summary: dict[str, Any]) -> None:
    by_action = summary["requests"]["by_action"]
    kinds = (
        "page", "api", "expired", "garbage", "bad_signature", "unknown_kid",
        "expired_no_refresh", "forged_refresh", "anonymous", "ws_valid", "ws_hold", "ws_bad",
    )  # fmt: skip

    assert all(by_action.get(kind, 0) > 0 for kind in kinds), by_action
    assert summary["websocket"]["accepted"] > 0
    assert summary["requests"]["websocket_refused"] > 0


def test_refused_credentials_get_their_401_or_403_and_valid_ones_their_page(
    summary: dict[str, Any],
) -> None:
    assert summary["requests"]["unexpected"] == {}


def test_no_request_times_out_or_fails_on_the_client(summary: dict[str, Any]) -> None:
    assert summary["requests"]["client_errors"] == {}


def test_valid_sessions_are_never_denied_while_the_issuer_is_up(summary: dict[str, Any]) -> None:
    denied = summary["requests"]["valid_denied"]

    assert not {key: n for key, n in denied.items() if key.startswith("steady")}, denied


def test_while_the_issuer_is_up_each_rotation_is_exactly_one_refresh_call(
    summary: dict[str, Any],
) -> None:
    steady = summary["refresh"]["steady"]

    assert steady["grants"] > 0
    assert steady["non_200"] == {}
    assert steady["duplicate_calls"] == 0
    assert steady["calls_per_rotation"] == 1.0
    assert steady["undelivered_grants"] == 0
    # The steady phase outlives an access token: every busy family was refreshed in it.
    assert steady["grants_per_busy_family"]["min"] >= 1, steady
    # The issuer's own count agrees with the wire (calls in flight at the boundary aside).
    assert abs(steady["issuer_grants"] - steady["grants"]) <= steady["calls_spanning_boundary"]


def test_while_the_issuer_is_up_it_detects_no_reuse_and_revokes_no_family(
    summary: dict[str, Any],
) -> None:
    steady = summary["refresh"]["steady"]

    assert steady["reuse_detected"] == 0
    assert steady["revoked_families"] == 0
    assert steady["relogins"] == 0


def test_the_issuer_flapped_through_every_down_mode(summary: dict[str, Any]) -> None:
    flapping = summary["refresh"]["flapping"]

    assert set(flapping["flaps"]) == {"slow", "500", "timeout"}, flapping
    assert flapping["issuer_calls"] > 0


def test_file_descriptors_return_to_baseline_after_the_servers_stop(
    summary: dict[str, Any],
) -> None:
    fds = summary["resources"]["fds"]

    assert fds["after_stop"] <= fds["before_start"] + FD_TOLERANCE, fds


def test_server_tasks_return_to_baseline_after_the_load(summary: dict[str, Any]) -> None:
    tasks = summary["resources"]["server_tasks"]

    assert tasks["after_load"] <= tasks["before_load"], tasks


def test_rss_growth_over_the_load_is_bounded(summary: dict[str, Any]) -> None:
    assert summary["resources"]["rss_mb"]["growth"] < RSS_BOUND_MB, summary["resources"]


def test_servers_log_no_errors(summary: dict[str, Any]) -> None:
    logs = summary["logs"]

    assert logs["server_errors"] == 0, logs["samples"]
    # uvicorn's line for denied upgrades is counted apart: never more than the denials.
    assert sum(logs["known_upstream"].values()) <= summary["requests"]["websocket_refused"]


def test_soak_summary_has_no_failures(summary: dict[str, Any]) -> None:
    assert summary["failures"] == []


# -- a refused upgrade, alone ----------------------------------------------------------------


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_refused_websocket_upgrade_logs_no_server_error() -> None:
    # jwtedge's servers run uvicorn with ws="wsproto" (deploy/run.py WS_PROTOCOL):
    # its default protocol logs an ERROR after every denial (Kludex/uvicorn#3138),
    # which would let any client write ERROR lines at will.
    with dev_issuer() as issuer:
        handler = _Errors()
        # Attached after DevIssuer.serve: its uvicorn config replaces the "uvicorn" handlers.
        logger = logging.getLogger("uvicorn")
        logger.addHandler(handler)
        try:
            with serve_app(create_app(app_config(issuer))) as url:
                ws_url = url.replace("http://", "ws://", 1) + "/ws"
                with pytest.raises(InvalidStatus) as refused:
                    connect(
                        ws_url,
                        origin=Origin(url),
                        additional_headers={"Cookie": "jwtedge_access=garbage"},
                        proxy=None,
                        open_timeout=10,
                    ).close()
        finally:
            logger.removeHandler(handler)

    assert refused.value.response.status_code == 401
    assert handler.messages == []
