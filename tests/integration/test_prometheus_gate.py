"""Health gates judged on real metrics: a real Prometheus scraping gauges the test sets.

The trigger's ``run()`` is driven directly with asyncio (it is the real trigger code, as
the triggerer would run it), and the operator end to end through ``dag.test()``, which
runs the deferral's trigger inline against a real (SQLite) Airflow metadata database.
"""

from __future__ import annotations

import asyncio
import json
import pprint
import re
import runpy
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prom_fixtures import GaugeExporter, PrometheusProcess, start_prometheus
from support.airflow_home import airflow_home as temporary_airflow_home
from support.airflow_home import migrate

pytestmark = pytest.mark.integration

ERRORS = "opsdag_test_error_ratio"
LATENCY = "opsdag_test_latency_seconds"
UP = "opsdag_test_up"
SELECTORS = {"canary": 'track="canary"', "stable": 'track="stable"'}


def service_judged_by(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """A service spec whose analysis is ``metrics`` (the gate judges its service's analysis)."""
    return {
        "name": "demo-api",
        "owners": ["tests"],
        "platform": {"kind": "sandbox"},
        "image": {"repository": "registry.opsdag.local/demo-api"},
        "canary": {"steps": [{"weight": 100, "bake": "5m"}]},
        "analysis": {"metrics": metrics},
    }


CONN_ENV = "AIRFLOW_CONN_PROMETHEUS_DEFAULT"

# No skip without Prometheus: a test skipped in CI tests nothing. scripts/setup installs it.
assert Path("/usr/bin/prometheus").exists(), "Prometheus is not installed: run scripts/setup"


def analysis_metrics(*, interval: str = "1s", inconclusive_limit: int = 1) -> list[dict[str, Any]]:
    """The demo service's kind of analysis, over the test's gauges."""
    from opsdag.spec.service import Metric

    metrics = [
        Metric(
            name="error-rate",
            query=f"max({ERRORS}{{$canary}})",
            baseline_query=f"max({ERRORS}{{$stable}})",
            max=0.02,
            max_ratio=2,
            baseline_floor=0.005,
            interval=interval,
            inconclusive_limit=inconclusive_limit,
        ),
        Metric(
            name="latency-p95",
            query=f"max({LATENCY}{{$canary}})",
            baseline_query=f"max({LATENCY}{{$stable}})",
            max_ratio=2,
            baseline_floor=0.05,
            interval=interval,
            failure_limit=1,
            inconclusive_limit=inconclusive_limit,
        ),
        Metric(
            name="availability",
            query=f"min({UP}{{$canary}})",
            min=1,
            interval=interval,
            inconclusive_limit=inconclusive_limit,
        ),
    ]
    return [m.model_dump(mode="json") for m in metrics]


# -- servers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exporter() -> Iterator[GaugeExporter]:
    gauges = GaugeExporter([ERRORS, LATENCY, UP]).start()
    yield gauges
    gauges.stop()


@pytest.fixture(scope="module")
def prometheus(
    exporter: GaugeExporter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusProcess]:
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"), [exporter.target])
    server.wait_for_targets(1)
    yield server
    server.stop()


@pytest.fixture
def prometheus_conn(prometheus: PrometheusProcess, monkeypatch: pytest.MonkeyPatch) -> PrometheusProcess:
    """``prometheus_default`` points at the test's Prometheus (env connection, as in production)."""
    monkeypatch.setenv(CONN_ENV, prometheus.connection_env())
    return prometheus


def set_canary(
    exporter: GaugeExporter,
    prometheus: PrometheusProcess,
    *,
    errors: float,
    latency: float,
    up: float = 1.0,
    stable_errors: float = 0.004,
    stable_latency: float = 0.12,
) -> None:
    """Set the gauges and wait until Prometheus has scraped exactly these values."""
    exporter.set(ERRORS, canary=errors, stable=stable_errors)
    exporter.set(LATENCY, canary=latency, stable=stable_latency)
    exporter.set(UP, canary=up, stable=1.0)
    for name, track, value in [
        (ERRORS, "canary", errors),
        (ERRORS, "stable", stable_errors),
        (LATENCY, "canary", latency),
        (LATENCY, "stable", stable_latency),
        (UP, "canary", up),
    ]:
        prometheus.wait_for_value(f'{name}{{track="{track}"}}', value)


def run_trigger(trigger: Any, *, timeout: float) -> tuple[dict[str, Any], float]:
    """Drive the trigger as the triggerer does: take its first event; return payload and seconds."""

    async def first_event() -> Any:
        async for event in trigger.run():
            return event
        raise AssertionError("the trigger ended without an event")

    started = time.monotonic()
    event = asyncio.run(asyncio.wait_for(first_event(), timeout))
    return event.payload, time.monotonic() - started


def make_trigger(bake_s: float, **kwargs: Any) -> Any:
    from opsdag.triggers.analysis import AnalysisTrigger

    kwargs.setdefault("metrics", analysis_metrics())
    return AnalysisTrigger(
        gate="stage_10",
        selectors=SELECTORS,
        window_end=time.time() + bake_s,
        query_timeout=2.0,
        **kwargs,
    )


# -- the hook ------------------------------------------------------------------------------


def test_hook_reads_one_number_or_none(prometheus_conn: PrometheusProcess, exporter: GaugeExporter) -> None:
    from opsdag.hooks.prometheus import PrometheusHook, PrometheusQueryError

    set_canary(exporter, prometheus_conn, errors=0.001, latency=0.1)
    hook = PrometheusHook()
    assert hook.query(f'max({ERRORS}{{track="canary"}})') == pytest.approx(0.001)
    assert hook.query("scalar(vector(2))") == 2.0
    assert hook.query('max(opsdag_no_such_metric{track="canary"})') is None  # empty result
    assert hook.query("vector(0) / vector(0)") is None  # NaN is no data
    with pytest.raises(PrometheusQueryError, match=r"returned 2 series .*aggregate it to one value"):
        hook.query(ERRORS)
    with pytest.raises(PrometheusQueryError, match=r"rejected the query \(bad_data"):
        hook.query("max(")
    assert asyncio.run(PrometheusHook().async_query(f'min({UP}{{track="canary"}})')) == 1.0
    assert hook.test_connection() == (True, f"Prometheus at {prometheus_conn.url} answers queries")


def test_hook_basic_auth_never_shows_the_password(
    exporter: GaugeExporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opsdag.hooks.prometheus import PrometheusHook, PrometheusUnavailable

    server = start_prometheus(tmp_path / "prom", [exporter.target], basic_auth=("gate", "s3cret-pass"))
    try:
        monkeypatch.setenv(CONN_ENV, server.connection_env())
        hook = PrometheusHook()
        assert hook.query("scalar(vector(3))") == 3.0
        assert "s3cret-pass" not in repr(hook.endpoint())
        monkeypatch.setenv(CONN_ENV, json.dumps({**server.connection(), "password": "wrong-password"}))
        with pytest.raises(PrometheusUnavailable, match="refused the credentials") as refused:
            PrometheusHook().query("vector(1)")
        assert "wrong-password" not in str(refused.value)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("conn", "url"),
    [
        ({"host": "127.0.0.1", "port": 9090}, "http://127.0.0.1:9090"),
        ({"host": "prom.example.com", "schema": "https"}, "https://prom.example.com"),
        (
            {"host": "https://mon.example.com/prometheus/", "port": 8443},
            "https://mon.example.com:8443/prometheus",
        ),
        ({"host": "http://prom:9090", "port": 1234}, "http://prom:9090"),  # the URL's own port wins
        ({"host": "prom", "extra": {"verify": False}}, "http://prom"),
    ],
)
def test_hook_url_from_the_connection(conn: dict[str, Any], url: str, monkeypatch: pytest.MonkeyPatch):
    from opsdag.hooks.prometheus import PrometheusHook

    monkeypatch.setenv("AIRFLOW_CONN_PROM_URL_TEST", json.dumps({"conn_type": "http", **conn}))
    assert PrometheusHook("prom_url_test").base_url == url
    endpoint = asyncio.run(PrometheusHook("prom_url_test").aendpoint())  # the trigger's way
    assert endpoint.base_url == url
    assert endpoint.verify is conn.get("extra", {}).get("verify", True)


# -- the trigger ---------------------------------------------------------------------------


def test_healthy_canary_passes_at_the_end_of_the_window(
    prometheus_conn: PrometheusProcess, exporter: GaugeExporter
) -> None:
    set_canary(exporter, prometheus_conn, errors=0.004, latency=0.15)
    payload, elapsed = run_trigger(make_trigger(3), timeout=20)
    assert payload["phase"] == "pass", payload["reason"]
    assert payload["window_ended"] is True
    assert elapsed >= 2.5  # not before the bake window ends
    assert re.match(r"all 3 metrics within limits: error-rate: passed \([34] pass, 0 fail", payload["reason"])
    by_metric = {m["metric"]: m for m in payload["metrics"]}
    assert by_metric["error-rate"]["last_value"] == pytest.approx(0.004)
    assert by_metric["error-rate"]["last_baseline"] == pytest.approx(0.004)
    assert by_metric["latency-p95"]["limit"] == "2 x stable (floor 0.05)"
    # measured at 0, 1, 2 (and 3) s: the last one may fall after the window's end on a busy machine
    assert {m["passed"] for m in payload["metrics"]} <= {3, 4}
    assert all(m["phase"] == "pass" for m in payload["measurements"])
    assert len(json.dumps(payload)) < 8000  # small enough for the metadata database


def test_bad_canary_fails_fast_with_metric_value_and_limit(
    prometheus_conn: PrometheusProcess, exporter: GaugeExporter
) -> None:
    set_canary(exporter, prometheus_conn, errors=0.081, latency=0.15)
    payload, elapsed = run_trigger(make_trigger(60), timeout=20)
    assert payload["phase"] == "fail"
    assert payload["reason"] == "error-rate 0.081 > max 0.02 (failures 1 > failure_limit 0)"
    assert elapsed < 20  # decided at the first measurement, not at the end of the 60 s window
    assert payload["window_ended"] is False


def test_slow_canary_fails_on_the_ratio_to_stable(
    prometheus_conn: PrometheusProcess, exporter: GaugeExporter
) -> None:
    set_canary(exporter, prometheus_conn, errors=0.004, latency=0.61)
    payload, elapsed = run_trigger(make_trigger(60), timeout=20)
    assert payload["phase"] == "fail"
    # failure_limit 1: the second measurement, one interval later, decides
    assert payload["reason"] == (
        "latency-p95 0.61 > 2 x stable 0.12 = 0.24 (ratio limit) (failures 2 > failure_limit 1)"
    )
    assert 0.8 < elapsed < 20  # not at the first measurement, nor at the window's end (60 s)


def test_canary_without_data_is_never_promoted(
    prometheus_conn: PrometheusProcess, exporter: GaugeExporter
) -> None:
    set_canary(exporter, prometheus_conn, errors=0.004, latency=0.15)
    exporter.set(UP, canary=None)  # the canary's series disappears
    prometheus_conn.wait_for_value(f'count({UP}{{track="canary"}}) or vector(0)', 0)
    payload, _ = run_trigger(make_trigger(3, metrics=analysis_metrics(inconclusive_limit=10)), timeout=20)
    assert payload["phase"] == "fail"
    # measured at 0, 1, 2 (and 3) s: on a busy machine one read may time out and fewer fit the window
    assert re.fullmatch(
        r"availability: no passing measurement in the bake window \(0 pass, 0 fail, [1-4] inconclusive\), "
        r"last no data: (canary query returned an empty result or NaN|Prometheus unreachable at \S+ \(.*\)); "
        r"never promoted on missing data",
        payload["reason"],
    ), payload["reason"]


def test_stopped_prometheus_is_inconclusive_then_fails_never_passes(
    exporter: GaugeExporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_prometheus(tmp_path / "prom", [exporter.target])
    monkeypatch.setenv(CONN_ENV, server.connection_env())
    server.stop()

    payload, elapsed = run_trigger(make_trigger(60), timeout=20)  # inconclusive_limit 1
    assert payload["phase"] == "fail"
    assert elapsed < 20  # the second gap in the data decides, one interval after the first (not at 60 s)
    first = payload["reason"].split("; error-rate")[0].split("; latency")[0]
    assert first.startswith(
        "error-rate: inconclusive (2) > inconclusive_limit (1), last no data: Prometheus unreachable at "
        f"{server.url} (ConnectError:"
    )
    assert payload["reason"].endswith("never promoted on missing data")
    assert {m["phase"] for m in payload["metrics"]} == {"fail"}

    # With room for gaps, the window's end decides: still never a pass on missing data.
    payload, _ = run_trigger(make_trigger(2, metrics=analysis_metrics(inconclusive_limit=10)), timeout=20)
    assert payload["phase"] == "fail"
    # measured at 0, 1 (and 2) s: fewer fit the window when a read waits for its timeout
    assert re.search(
        r"no passing measurement in the bake window \(0 pass, 0 fail, [1-3] inconclusive\)", payload["reason"]
    )


def test_broken_query_is_an_error_at_once(
    prometheus_conn: PrometheusProcess, exporter: GaugeExporter
) -> None:
    from opsdag.spec.service import Metric

    unaggregated = Metric(name="error-rate", query=f"{ERRORS}{{$canary}} or {ERRORS}{{$stable}}", max=0.02)
    set_canary(exporter, prometheus_conn, errors=0.004, latency=0.15)
    payload, elapsed = run_trigger(
        make_trigger(60, metrics=[unaggregated.model_dump(mode="json")]), timeout=20
    )
    assert payload["phase"] == "error"
    assert payload["reason"].startswith("error-rate: query error: the query returned 2 series")
    assert elapsed < 20  # at once, not at the end of the 60 s window


def test_trigger_serializes_plain_data_and_resumes_the_same_window(
    prometheus_conn: PrometheusProcess,
) -> None:
    from opsdag.triggers.analysis import AnalysisTrigger

    window_end = datetime(2030, 1, 1, tzinfo=UTC)
    trigger = AnalysisTrigger(
        gate="stage_25", metrics=analysis_metrics(), selectors=SELECTORS, window_end=window_end
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "opsdag.triggers.analysis.AnalysisTrigger"
    assert kwargs["window_end"] == window_end.timestamp()  # absolute: a restart keeps the window
    assert json.loads(json.dumps(kwargs)) == kwargs  # plain JSON, no objects
    assert "password" not in json.dumps(kwargs)
    rebuilt = AnalysisTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)


def test_trigger_restarted_after_its_window_decides_at_once(
    prometheus_conn: PrometheusProcess, exporter: GaugeExporter
) -> None:
    set_canary(exporter, prometheus_conn, errors=0.004, latency=0.15)
    payload, elapsed = run_trigger(make_trigger(-30), timeout=20)
    assert payload["phase"] == "pass"
    assert elapsed < 10  # one measurement (below), no new window
    assert {m["passed"] for m in payload["metrics"]} == {1}


# -- the operator, end to end with Airflow ---------------------------------------------------


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A migrated SQLite Airflow metadata database in a temporary AIRFLOW_HOME, for ``dag.test()``.

    The settings go into ``os.environ`` (so subprocesses see them too) and Airflow's ORM
    is reconfigured in case Airflow was imported before this fixture ran (``support.airflow_home``).
    """
    template = migrate(tmp_path_factory.mktemp("airflow-template"))
    with temporary_airflow_home(tmp_path_factory.mktemp("airflow-home"), template) as home:
        yield home


# dag.test() runs a DAG that the DAG processor knows, so the test's DAGs live in a file in
# the DAGs folder; the test runs the same file's DAG objects (tasks run in this process).
GATE_DAGS = """
from datetime import UTC, datetime

from airflow.sdk import DAG, task

from opsdag.operators.gate import HealthGateOperator

METRICS = {metrics}
SERVICE = {service}

for dag_id, bake in (("gate_pass", "3s"), ("gate_fail", "60s")):
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False) as dag:
        gate = HealthGateOperator(
            task_id="gate",
            gate_name="stage_10",
            weight=10,
            bake=bake,
            service=SERVICE,
            selectors={{"canary": "{{{{ params.canary }}}}", "stable": 'track="stable"'}},
            params={{"canary": 'track="canary"'}},
            retries=2,
        )

        @task(trigger_rule="all_done")
        def report(ti=None):
            verdict = ti.xcom_pull(task_ids="gate", key="verdict")
            return {{"phase": verdict["phase"], "reason": verdict["reason"]}}

        gate >> report()
    globals()[dag_id] = dag
"""


@pytest.fixture(scope="module")
def gate_dags(airflow_db: Path) -> dict[str, Any]:
    """The test's release-like DAGs (a gate, then a report task reading its verdict either way)."""
    path = airflow_db / "dags" / "gate_test_dags.py"
    metrics = analysis_metrics()
    path.write_text(
        GATE_DAGS.format(metrics=pprint.pformat(metrics), service=pprint.pformat(service_judged_by(metrics)))
    )
    return runpy.run_path(str(path))


def run_dag(dag: Any) -> tuple[Any, dict[str, str], dict[str, Any]]:
    """``dag.test()``; the run, its task states and the XComs ``{task_id.key: value}``."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dagrun = dag.test()
    states = {ti.task_id: str(ti.state) for ti in dagrun.get_task_instances()}
    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=dagrun.run_id, dag_ids=dag.dag_id)).all()
        xcoms = {f"{row.task_id}.{row.key}": XComModel.deserialize_value(row) for row in rows}
    return dagrun, states, xcoms


def test_gate_operator_passes_a_healthy_canary(
    gate_dags: dict[str, Any], prometheus_conn: PrometheusProcess, exporter: GaugeExporter
) -> None:
    set_canary(exporter, prometheus_conn, errors=0.004, latency=0.15)
    dagrun, states, xcoms = run_dag(gate_dags["gate_pass"])
    assert states == {"gate": "success", "report": "success"}
    assert str(dagrun.state) == "success"
    verdict = xcoms["gate.verdict"]
    assert verdict["phase"] == "pass"
    assert (verdict["gate"], verdict["weight"], verdict["window_ended"]) == ("stage_10", 10, True)
    assert [m["metric"] for m in verdict["metrics"]] == ["error-rate", "latency-p95", "availability"]
    assert xcoms["report.return_value"]["phase"] == "pass"


def test_gate_operator_fails_a_bad_canary_without_retrying(
    gate_dags: dict[str, Any], prometheus_conn: PrometheusProcess, exporter: GaugeExporter
) -> None:
    set_canary(exporter, prometheus_conn, errors=0.081, latency=0.15)
    started = time.monotonic()
    dagrun, states, xcoms = run_dag(gate_dags["gate_fail"])
    assert time.monotonic() - started < 45  # the 60 s window was cut short by the failure
    assert states == {"gate": "failed", "report": "success"}
    reason = "error-rate 0.081 > max 0.02 (failures 1 > failure_limit 0)"
    assert xcoms["report.return_value"] == {"phase": "fail", "reason": reason}
    gate_ti = next(ti for ti in dagrun.get_task_instances() if ti.task_id == "gate")
    assert gate_ti.try_number == 1  # AirflowFailException: a verdict is not retried


def test_gate_operator_refuses_to_start_without_prometheus(
    exporter: GaugeExporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from opsdag.operators.gate import HealthGateOperator

    monkeypatch.setenv(CONN_ENV, json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": 1}))
    gate = HealthGateOperator(
        task_id="gate",
        weight=25,
        bake=timedelta(seconds=30),
        service=service_judged_by(analysis_metrics()),
        selectors=SELECTORS,
    )

    class RecordingTaskInstance:  # stands in for Airflow's task instance: only XComs matter here
        def __init__(self) -> None:
            self.xcom: dict[str, object] = {}

        def xcom_push(self, key: str, value: object) -> None:
            self.xcom[key] = value

    ti = RecordingTaskInstance()
    with pytest.raises(
        AirflowException, match=r"gate stage_25 cannot start: Prometheus unreachable"
    ) as raised:
        gate.execute({"ti": ti})
    assert not isinstance(raised.value, AirflowFailException)  # retryable: nothing was judged
    # the report can still say why the stage failed if no retry is left
    assert ti.xcom["verdict"]["phase"] == "inconclusive"
    assert "never promoted on missing data" in ti.xcom["verdict"]["reason"]


def test_gate_operator_takes_its_service_s_analysis_when_the_dag_is_built_and_refuses_a_bad_one() -> None:
    from pydantic import ValidationError

    from opsdag.operators.gate import HealthGateOperator

    with pytest.raises(TypeError, match="service"):
        HealthGateOperator(task_id="gate", weight=50, bake="30s", selectors=SELECTORS)  # type: ignore[call-arg]
    bad = {**service_judged_by(analysis_metrics()), "analysis": {"metrics": "x"}}
    with pytest.raises(ValidationError, match="metrics"):
        HealthGateOperator(task_id="g", weight=50, bake="30s", service=bad, selectors=SELECTORS)
