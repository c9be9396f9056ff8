"""The served daemon's admin API against its own OpenAPI document (schemathesis), the
bootstrap token, and the OpenAPI contract (additionalProperties false, bearer auth).

One real ``dispatchd run`` (its own embedded Valkey in a temporary directory) serves the
API for the module; requests go over real HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from admin.server import free_port


class Served:
    def __init__(self, base: str, token: str, proc: subprocess.Popen[str], env: dict[str, str]):
        self.base, self.token, self.proc, self.env = base, token, proc, env

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _start(data_dir: Path, admin_port: int) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
    env |= {"DISPATCHD_DATA_DIR": str(data_dir), "DISPATCHD_ADMIN_PORT": str(admin_port),
            "DISPATCHD_METRICS_PORT": str(free_port("127.0.0.1")),
            "DISPATCHD_LOG_FORMAT": "text"}
    proc = subprocess.Popen([sys.executable, "-m", "dispatchd", "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    return proc, env


def _wait_http(base: str, proc: subprocess.Popen[str]) -> None:
    for _ in range(600):
        assert proc.poll() is None, "dispatchd run exited"
        try:
            httpx.get(base + "/schema/openapi.json", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("admin API did not come up")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("admin-daemon")
    port = free_port("127.0.0.1")
    proc, env = _start(data, port)
    base = f"http://127.0.0.1:{port}"
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("bootstrap admin token: dsp_"), line
    token = line.split(": ", 1)[1].strip()
    _wait_http(base, proc)
    auth = {"Authorization": f"Bearer {token}"}
    httpx.post(base + "/v1/tenants", json={"id": "acme"}, headers=auth).raise_for_status()
    httpx.post(base + "/v1/tenants/acme/groups", json={"id": "g1"}, headers=auth
               ).raise_for_status()
    try:
        yield Served(base, token, proc, env)
    finally:
        if proc.poll() is None:
            _stop(proc)


def test_bootstrap_token_is_printed_once_and_stored_hashed(served: Served) -> None:
    r = httpx.get(served.base + "/v1/tokens", headers=served.headers())
    assert r.status_code == 200
    (boot,) = r.json()
    assert boot["role"] == "admin" and boot["tenants"] is None and "token" not in boot
    assert served.token not in r.text


def test_openapi_document(served: Served) -> None:
    assert httpx.get(served.base + "/schema/openapi.json").status_code == 401
    doc = httpx.get(served.base + "/schema/openapi.json", headers=served.headers()).json()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    bodies = set()
    for item in doc["paths"].values():
        for op in item.values():
            ref = (op.get("requestBody", {}).get("content", {}).get("application/json", {})
                   .get("schema", {}).get("$ref"))
            if ref:
                bodies.add(ref.rsplit("/", 1)[1])
            for status in ("401", "403", "404", "422"):
                assert status in op["responses"]
    assert {"GroupCreate", "AgentIn", "RulesIn", "TokenIn"} <= bodies
    schemas: dict[str, Any] = doc["components"]["schemas"]
    for name in bodies:
        assert schemas[name]["additionalProperties"] is False, name
    assert schemas["Tier"]["additionalProperties"] is False  # nested request parts too


#: 422 codes of the scripts that a schema-valid body earns for what no schema can say: the
#: stored state (unknown ids) or a rule across fields (overflow tiers, ticket templates).
#: E_BAD_ARG and E_BAD_ID are not among them: for a schema-valid body they would mean the
#: schema and the scripts' checks disagree.
DOCUMENTED_422 = {"E_GROUP_UNKNOWN", "E_AGENT_UNKNOWN", "E_TEAM_UNKNOWN",
                  "E_TICKET_TYPE_UNKNOWN", "E_TICKET_FIELD", "E_AGENT_NOT_IN_GROUP",
                  "E_SAME_GROUP", "E_BAD_TIER"}


def refused_as_documented(response: Any) -> bool:
    """A documented 422 (admin.app ERRORS): one of :data:`DOCUMENTED_422`, or one of the
    API's own checks (no ``code``: a time zone, unique names, a text over its limit in
    UTF-8 bytes while within the schema's ``maxLength`` in characters)."""
    if response.status_code != 422:
        return False
    code = response.json().get("code")
    return code is None or code in DOCUMENTED_422


def accepts_valid_data(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' positive_data_acceptance, except for documented 422s."""
    if refused_as_documented(response):
        return None
    return positive_data_acceptance(ctx, response, case)  # type: ignore[no-any-return]


def test_api_conforms_to_its_openapi(served: Served) -> None:
    """schemathesis: every operation of the document, generated inputs (valid and not),
    every default check (no 5xx, documented status codes and bodies, invalid data
    refused; valid data accepted unless refused as documented: an unknown group named in
    a schema-valid body is a 422). Its pytest plugin does not run on this pytest, so the
    operations are driven through hypothesis here."""
    schema = schemathesis.openapi.from_url(served.base + "/schema/openapi.json",
                                           headers=served.headers())
    examples = int(os.environ.get("DISPATCHD_SCHEMATHESIS_EXAMPLES", "15"))
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(headers=served.headers(),
                                   excluded_checks=[positive_data_acceptance],
                                   additional_checks=[accepts_valid_data])

        try:
            check()
        except Exception as exc:  # one report for every failing operation
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 40
    assert not failures, "\n\n".join(failures)
