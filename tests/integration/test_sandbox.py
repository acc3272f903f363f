"""The sandbox platform against real servers: HAProxy, Prometheus, PostgreSQL, demo apps.

The driver and router are used through their interfaces here; tests/conformance holds what
every driver + router pair must do, this file what is the sandbox's own.

Most tests share the session ``sandbox`` (about 2 s to bring up) and leave it with no
canary; ``test_cli_up_twice_status_down`` runs the real CLI on a sandbox of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.sandbox import SandboxHandle
from support.waiting import wait_for

from opsdag.dev.sandbox.demo_app import DemoApp, make_server
from opsdag.dev.sandbox.processes import group_members, pid_alive
from opsdag.dev.sandbox.state import SandboxError
from opsdag.dev.sandbox.status import format_status, sandbox_status
from opsdag.dev.sandbox.versions import load_versions, parse_versions
from opsdag.platforms.base import CANARY, TrafficRouter, WorkloadDriver
from opsdag.platforms.sandbox import SandboxDriver

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sbx(sandbox: SandboxHandle):
    """The session sandbox, without a canary and with stable at 1.0.0 before and after each test
    (other test directories share the session's sandbox)."""
    sandbox.reset()
    yield sandbox
    sandbox.reset()


def measured(handle: SandboxHandle) -> dict:
    return handle.status()["traffic"]["measured"]


def app_pidfiles(handle: SandboxHandle) -> list[str]:
    return sorted(r.name for r in handle.layout.processes().records() if r.name.startswith("app-"))


def test_up_serves_initial_stable_at_100(sbx: SandboxHandle) -> None:
    st = sbx.status()
    assert st["up"] is True
    assert st["stable"]["version"] == "1.0.0"
    assert st["canary"] is None
    assert st["traffic"]["configured"] == {"stable": 100, "canary": 0}
    wait_for(lambda: (measured(sbx)["responses"]["stable"] or 0) >= 10, what="stable responses at HAProxy")
    assert measured(sbx)["stable"] == 100.0
    with urllib.request.urlopen(sbx.frontend_url, timeout=5) as resp:
        assert resp.headers["X-Version"] == "1.0.0"
        assert json.loads(resp.read())["version"] == "1.0.0"
    driver, router = sbx.driver(), sbx.router()
    assert isinstance(driver, WorkloadDriver) and isinstance(router, TrafficRouter)
    status = driver.status()
    assert status.stable.image == "registry.opsdag.local/demo-api:1.0.0"
    assert status.canary is None and router.verify_weight().canary == 0 and status.stable_healthy


def test_status_names_ports_and_never_the_password(sbx: SandboxHandle) -> None:
    st = sbx.status()
    assert st["haproxy"]["frontend_url"].startswith("http://127.0.0.1:")
    assert Path(st["haproxy"]["runtime_socket"]).is_socket()
    assert st["prometheus"]["url"].startswith("http://127.0.0.1:")
    pg = st["postgres"]
    assert pg["host"] == "127.0.0.1" and pg["port"] and pg["user"] and pg["database"] == "demo"
    assert Path(pg["password_file"]).stat().st_mode & 0o777 == 0o600
    assert Path(st["loadgen"]["counts_file"]).exists()
    password = sbx.postgres.password
    assert password not in json.dumps(st)
    assert password not in sbx.layout.state_file.read_text()
    connections_file = Path(st["connections_file"])
    assert connections_file.stat().st_mode & 0o777 == 0o600
    connections = json.loads(connections_file.read_text())
    assert connections["prometheus_default"]["port"] == int(st["prometheus"]["url"].rsplit(":", 1)[1])
    assert connections["postgres_demo"]["schema"] == "demo"
    assert connections["postgres_drill"]["extra"] == {"opsdag_drill_target": True}
    token_file = sbx.layout.root / "alerts" / "webhook-token"  # Alertmanager's credentials_file
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert connections["opsdag_alerts"]["password"] == token_file.read_text().strip()
    assert connections["opsdag_alerts"]["password"] not in json.dumps(st)


def test_the_marker_writer_adds_a_row_every_few_seconds_without_a_password_on_its_command_line(
    sbx: SandboxHandle,
) -> None:
    def markers() -> int:
        return int(sbx.postgres.psql("SELECT count(*) FROM opsdag_marker;", dbname="demo").strip())

    first = markers()
    wait_for(lambda: markers() >= first + 2, timeout=20, what="two more rows in demo.opsdag_marker")
    record = sbx.layout.processes().read("marker-writer")
    assert record is not None and pid_alive(record.pid)
    cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes().decode()
    assert "passfile=" in cmdline and sbx.postgres.password not in cmdline


def test_loadgen_counts_grow(sbx: SandboxHandle) -> None:
    first = wait_for(sbx.counts, what="counts file")
    wait_for(lambda: sbx.counts()["total"] >= first["total"] + 25, 10, what="25 more answers")
    counts = sbx.counts()
    assert counts["by_version"].get("1.0.0", 0) > 0
    assert counts["by_status"].get("200", 0) > 0
    assert counts["updated_at"] > first["updated_at"]


def test_canary_split_then_promote(sbx: SandboxHandle) -> None:
    driver, router = sbx.driver(), sbx.router()
    old_stable_pids = [i["pid"] for i in sbx.status()["stable"]["instances"]]
    driver.start(sbx.image("1.1.0"), 2)
    assert router.verify_weight().canary == 0
    wait_for(lambda: driver.readiness().ready, 20, what="canary 1.1.0 ready")

    router.set_weight(50)
    assert sbx.status()["traffic"]["configured"] == {"stable": 50, "canary": 50}
    share = wait_for(
        lambda: (m := measured(sbx)) and sum(m["responses"].values()) >= 100 and m,
        15,
        what="100 responses after the weight change",
    )
    assert 40 <= share["canary"] <= 60, share
    wait_for(lambda: sbx.counts()["by_version"].get("1.1.0", 0) > 20, 10, what="loadgen answers from 1.1.0")

    driver.promote()
    status = driver.status()
    assert status.stable.image == sbx.image("1.1.0")
    assert status.canary is None and router.verify_weight().canary == 0
    assert sbx.status()["stable"]["version"] == "1.1.0"
    assert not any(pid_alive(pid) for pid in old_stable_pids)

    def only_new_version() -> bool:
        recent = sbx.counts()["recent"]
        return len(recent) >= 2 and all(set(b["by_version"]) == {"1.1.0"} for b in recent[-2:])

    wait_for(only_new_version, 10, what="a full second answered only by 1.1.0")
    driver.promote()  # idempotent: already promoted
    assert driver.status().stable.image == sbx.image("1.1.0")


def test_undeclared_tag_never_becomes_ready(sbx: SandboxHandle) -> None:
    driver, router = sbx.driver(), sbx.router()
    driver.start("registry.opsdag.local/demo-api:9.9.9", 2)
    readiness = driver.readiness()
    assert readiness.failed and not readiness.ready
    assert "registry.opsdag.local/demo-api:9.9.9 cannot be pulled" in readiness.reason
    assert "tag 9.9.9 is not declared in include/sandbox/versions.yaml" in readiness.reason
    with pytest.raises(SandboxError, match="cannot be pulled"):
        router.set_weight(10)
    digest = "registry.opsdag.local/demo-api@sha256:" + "0" * 64
    driver.start(digest, 2)
    assert f"the sandbox registry has no manifest sha256:{'0' * 64}" in driver.readiness().reason
    driver.remove(CANARY)
    assert driver.status().canary is None


def test_crash_on_start_fails_with_exit_status(sbx: SandboxHandle) -> None:
    driver = sbx.driver()
    driver.start(sbx.image("1.4.0-crash"), 2)
    readiness = wait_for(
        lambda: (r := driver.readiness()).failed and r, 15, what="crashing canary reported failed"
    )
    assert not readiness.ready
    assert "exited with status 3" in readiness.reason
    assert "crash_on_start" in readiness.reason  # from the log tail
    with pytest.raises(SandboxError):
        driver.promote()
    assert driver.status().stable_healthy


def test_rollback_removes_canary_and_stable_keeps_serving(sbx: SandboxHandle) -> None:
    driver, router = sbx.driver(), sbx.router()
    driver.start(sbx.image("1.2.0-errors"), 2)
    wait_for(lambda: driver.readiness().ready, 20, what="canary ready")
    router.set_weight(50)
    wait_for(lambda: measured(sbx)["responses"]["canary"] >= 20, 10, what="canary answering")
    canary_pids = [i["pid"] for i in sbx.status()["canary"]["instances"]]

    router.set_weight(0)
    driver.remove(CANARY)
    status = driver.status()
    assert status.canary is None and router.verify_weight().canary == 0 and status.stable_healthy
    assert sbx.status()["traffic"]["configured"] == {"stable": 100, "canary": 0}
    assert not any(pid_alive(pid) or group_members(pid) for pid in canary_pids)
    wait_for(lambda: measured(sbx)["responses"]["stable"] >= 25, 10, what="stable answering after rollback")
    assert measured(sbx)["canary"] == 0.0
    driver.remove(CANARY)  # idempotent


def test_deploy_canary_twice_keeps_one_set(sbx: SandboxHandle) -> None:
    driver = sbx.driver()
    before = app_pidfiles(sbx)
    driver.start(sbx.image("1.1.0"), 2)
    first = sbx.status()["canary"]["instances"]
    driver.start(sbx.image("1.1.0"), 2)
    assert sbx.status()["canary"]["instances"] == first
    assert len(app_pidfiles(sbx)) == len(before) + 2

    driver.start(sbx.image("1.3.0-slow"), 2)  # a different image replaces the canary
    st = sbx.status()
    assert st["canary"]["version"] == "1.3.0-slow"
    assert len(app_pidfiles(sbx)) == len(before) + 2
    assert not any(pid_alive(i["pid"]) for i in first)


def test_instances_per_version(sbx: SandboxHandle) -> None:
    driver, router = sbx.driver(), sbx.router()
    driver.start(sbx.image("1.1.0"), 1)
    wait_for(lambda: driver.readiness().ready, 20, what="one-instance canary ready")
    router.set_weight(20)
    share = wait_for(
        lambda: (m := measured(sbx)) and sum(m["responses"].values()) >= 100 and m, 15, what="100 responses"
    )
    assert 12 <= share["canary"] <= 28, share
    with pytest.raises(SandboxError, match="canary instances must be between 1 and 8"):
        driver.start(sbx.image("1.3.0-slow"), 9)
    driver.promote()  # the promoted version keeps its one process
    stable = sbx.status()["stable"]
    assert stable["version"] == "1.1.0"
    assert [i["slot"] for i in stable["instances"]] == ["stable1"]
    assert all(i["running"] for i in stable["instances"])
    # A 3-process canary against the 1-process stable still gets the share asked for.
    driver.start(sbx.image("1.0.0"), 3)
    wait_for(lambda: driver.readiness().ready, 20, what="three-instance canary ready")
    router.set_weight(25)
    share = wait_for(
        lambda: (m := measured(sbx)) and sum(m["responses"].values()) >= 100 and m, 15, what="100 responses"
    )
    assert 17 <= share["canary"] <= 33, share
    driver.promote()
    assert len(sbx.status()["stable"]["instances"]) == 3


def only_version(sbx: SandboxHandle, version: str) -> bool:
    """The load generator's last full second on the main route was answered by ``version`` only."""
    recent = sbx.counts()["recent"]
    return len(recent) >= 2 and set(recent[-1]["by_version"]) == {version}


def test_switch_moves_all_answers_in_one_haproxy_call(sbx: SandboxHandle) -> None:
    driver, router = sbx.driver(), sbx.router()
    driver.start(sbx.image("1.1.0"), 2)
    wait_for(lambda: driver.readiness().ready, 20, what="canary ready")
    router.switch(CANARY)
    # 2 stable + 2 canary weights flipped, in one runtime call that HAProxy runs in well under 50 ms
    assert router.last_commands == 4 and router.last_call_s < 0.05, (router.last_commands, router.last_call_s)
    wait_for(lambda: only_version(sbx, "1.1.0"), 10, what="a full second answered only by 1.1.0")
    assert len(sbx.status()["stable"]["instances"]) == 2  # the old colour stays up for a switch back
    router.switch("stable")
    wait_for(lambda: only_version(sbx, "1.0.0"), 10, what="a full second answered only by 1.0.0 again")


def test_preview_route_gets_its_share_of_the_load_and_nothing_of_the_main_route(sbx: SandboxHandle) -> None:
    driver, router = sbx.driver(), sbx.router(preview_share=0.2)
    driver.start(sbx.image("1.1.0"), 2)
    wait_for(lambda: driver.readiness().ready, 20, what="canary ready")
    router.set_preview(True)
    assert router.verify_weight().preview and router.verify_weight().canary == 0
    start = sbx.counts()
    before = (start.get("preview") or {}).get("by_version", {}).get("1.1.0", 0)  # earlier tests' answers
    wait_for(
        lambda: sbx.counts()["preview"]["by_version"].get("1.1.0", 0) >= before + 30,
        15,
        what="30 more preview answers",
    )
    end = sbx.counts()
    main = end["total"] - start["total"]
    preview = end["preview"]["total"] - (start.get("preview") or {}).get("total", 0)
    assert 0.12 <= preview / (main + preview) <= 0.28, (main, preview)  # 20 % of the requests
    assert end["by_version"].get("1.1.0", 0) == start["by_version"].get("1.1.0", 0)  # main: old only
    grew = {
        v
        for v, n in end["preview"]["by_version"].items()
        if n > (start.get("preview") or {}).get("by_version", {}).get(v, 0)
    }
    assert grew == {"1.1.0"}  # every preview answer of this test came from the canary
    st = sbx.status()["preview"]
    assert st["enabled"] and st["reaches_canary"] and st["share"] == 0.2
    assert st["url"].startswith("http://127.0.0.1:")
    ports = sorted(i["port"] for i in sbx.status()["canary"]["instances"])
    assert st["ports"] == ports
    text = format_status(sandbox_status(sbx.layout))
    assert f"preview     {st['url']} open -> the canary {ports}, 20% of the load" in text

    router.set_preview(False)
    closed_at = time.time()
    assert not router.verify_weight().preview
    # The counts file is rewritten every 0.5 s: the first write after the close has every
    # preview answer there will be; a second later there is still no other.
    wait_for(lambda: sbx.counts()["updated_at"] > closed_at + 0.1, 5, what="counts written after the close")
    closed = sbx.counts()["preview"]["total"]
    wait_for(lambda: sbx.counts()["updated_at"] > closed_at + 1.1, 5, what="a second of counts")
    assert sbx.counts()["preview"]["total"] == closed  # no preview request once it is closed
    unanswered = sbx.counts()["preview"]["by_version"].get("none", 0)  # requests that met no server
    assert unanswered == (start.get("preview") or {}).get("by_version", {}).get("none", 0)  # none of ours
    assert "preview     " in format_status(sandbox_status(sbx.layout))
    assert not sbx.status()["preview"]["enabled"]


def test_rolling_replaces_instances_within_the_slots(sbx: SandboxHandle) -> None:
    driver, router = sbx.driver(), sbx.router()
    old = {i["slot"]: i["pid"] for i in sbx.status()["stable"]["instances"]}
    driver.start(sbx.image("1.1.0"), 1)
    wait_for(lambda: driver.readiness().ready, 20, what="first new instance ready")
    driver.scale("stable", 1)  # the old instance of the highest slot goes
    stable = sbx.status()["stable"]["instances"]
    assert [i["slot"] for i in stable] == ["stable1"]
    assert not pid_alive(old["stable2"]) and pid_alive(old["stable1"])
    driver.scale(CANARY, 2)
    wait_for(lambda: driver.readiness().ready, 20, what="second new instance ready")
    assert sorted(i["slot"] for i in sbx.status()["canary"]["instances"]) == ["canary1", "canary2"]
    router.set_weight(67)  # the replica ratio of 2 new beside 1 old
    share = wait_for(
        lambda: (m := measured(sbx)) and sum(m["responses"].values()) >= 100 and m, 15, what="100 responses"
    )
    assert 57 <= share["canary"] <= 77, share
    driver.promote()  # the last old instance goes only now
    assert not pid_alive(old["stable1"])
    stable = sbx.status()["stable"]
    assert stable["version"] == "1.1.0" and [i["slot"] for i in stable["instances"]] == ["stable1", "stable2"]


def test_prometheus_scrapes_apps_with_track_labels(sbx: SandboxHandle) -> None:
    driver, router = sbx.driver(), sbx.router()
    driver.start(sbx.image("1.1.0"), 2)
    wait_for(lambda: driver.readiness().ready, 20, what="canary ready")
    router.set_weight(50)
    prom = sbx.prometheus
    selectors = driver.metric_selectors()
    assert 'track="canary"' in selectors["canary"] and 'version="1.1.0"' in selectors["canary"]
    assert 'track="stable"' in selectors["stable"]

    def rate_of(track: str) -> float:
        query = "sum(rate(opsdag_demo_http_requests_total{$sel}[5s]))".replace("$sel", selectors[track])
        result = prom.query(query)
        return float(result[0]["value"][1]) if result else 0.0

    wait_for(
        lambda: rate_of("canary") > 0 and rate_of("stable") > 0, 20, what="canary and stable request rates"
    )
    series = prom.query("opsdag_demo_http_requests_total{$canary}".replace("$canary", selectors["canary"]))
    assert series and {s["metric"]["version"] for s in series} == {"1.1.0"}
    assert {s["metric"]["track"] for s in series} == {"canary"}
    assert prom.query("opsdag_demo_http_request_duration_seconds_bucket")
    assert prom.query('haproxy_server_http_responses_total{proxy="demo"}')

    driver.promote()
    # After promote the same processes are scraped as stable.
    wait_for(
        lambda: any(
            t["labels"].get("version") == "1.1.0" and t["labels"].get("track") == "stable"
            for t in prom.active_targets()
        ),
        10,
        what="promoted processes labelled track=stable",
    )
    assert 'track="canary"' in driver.metric_selectors()["canary"]


def test_outage_and_restart_of_one_component(sbx: SandboxHandle) -> None:
    before = sbx.status()
    sbx.stop_prometheus()
    st = sbx.status()
    assert not st["prometheus"]["running"] and not st["up"]
    assert not pid_alive(before["prometheus"]["pid"])
    sbx.start_prometheus()
    after = sbx.status()
    assert after["up"] and after["prometheus"]["url"] == before["prometheus"]["url"]
    assert after["haproxy"]["pid"] == before["haproxy"]["pid"]
    assert sbx.prometheus.ready()


def test_postgres_demo_database(sbx: SandboxHandle) -> None:
    psycopg = pytest.importorskip("psycopg")
    server = sbx.postgres
    with psycopg.connect(server.dsn("demo")) as conn:
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("customers", "products", "orders")
        }
    assert counts == {"customers": 50, "products": 20, "orders": 200}
    assert server.password not in server.dsn("demo")


def test_demo_app_faults_start_after_delay() -> None:
    app = DemoApp("9.0.0-test", error_rate=1.0, fault_after_s=0.5)
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/"

    def status_code() -> int:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            assert exc.headers["X-Version"] == "9.0.0-test"
            return exc.code

    try:
        assert status_code() == 200
        wait_for(lambda: status_code() == 500, 5, what="faults to start")
        with urllib.request.urlopen(url + "metrics", timeout=2) as resp:
            text = resp.read().decode()
        assert 'opsdag_demo_http_requests_total{code="500"}' in text
        assert 'opsdag_demo_build_info{app_version="9.0.0-test"} 1.0' in text
    finally:
        server.shutdown()
        server.server_close()


def test_versions_file_and_image_resolution() -> None:
    catalog = load_versions()
    assert catalog.initial_stable == "1.0.0"
    assert catalog.get("1.2.0-errors").error_rate == 0.08
    assert catalog.get("1.3.0-slow").extra_latency_ms == 400
    assert catalog.get("1.4.0-crash").crash_on_start
    assert catalog.get("1.5.0-late").fault_after_s == 10
    assert catalog.resolve("registry.opsdag.local/demo-api:1.1.0").version.tag == "1.1.0"
    assert catalog.resolve("other.registry:5000/demo-api:1.1.0").version.tag == "1.1.0"
    assert "has no tag" in catalog.resolve("registry:5000/demo-api").reason
    with pytest.raises(ValueError, match="error_rate"):
        parse_versions(
            {"service": "s", "repository": "r", "initial_stable": "1", "versions": {"1": {"error_rate": 2}}}
        )


def test_platform_without_sandbox_says_how_to_start_it(tmp_path: Path) -> None:
    driver = SandboxDriver(sandbox_dir=tmp_path / "nowhere")
    with pytest.raises(SandboxError, match=r"python -m opsdag\.sandbox up"):
        driver.status()


def test_cli_up_twice_status_down(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "plugins"),
        "OPSDAG_SANDBOX_DIR": str(tmp_path / "cli-sandbox"),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "opsdag.sandbox", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )

    try:
        first = cli("up", "--rate", "10")
        assert first.returncode == 0, first.stderr + first.stdout
        assert "starting haproxy" in first.stdout
        st = json.loads(cli("status", "--json").stdout)
        assert st["up"] and st["stable"]["version"] == "1.0.0"
        pids = {name: st[name]["pid"] for name in ("postgres", "haproxy", "prometheus", "loadgen")}
        pids.update({i["name"]: i["pid"] for i in st["stable"]["instances"]})

        second = cli("up", "--json")
        assert second.returncode == 0, second.stderr
        again = json.loads(second.stdout)
        assert "already running" in second.stderr
        assert {name: again[name]["pid"] for name in ("postgres", "haproxy", "prometheus", "loadgen")} == {
            name: pids[name] for name in ("postgres", "haproxy", "prometheus", "loadgen")
        }
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert "sandbox is down" in down.stdout
    survivors = [pid for pid in pids.values() if pid_alive(pid) or group_members(pid)]
    assert survivors == []
    stopped = cli("status")
    assert stopped.returncode == 1 and "NOT up" in stopped.stdout
    # --purge also removes the PostgreSQL cluster, which lives outside tmp_path (see postgres.py).
    cluster = Path(st["postgres"]["data_dir"]).resolve()
    assert cli("down", "--purge").returncode == 0
    assert not cluster.exists() and not Path(env["OPSDAG_SANDBOX_DIR"]).exists()
