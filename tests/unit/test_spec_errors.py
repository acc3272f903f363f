"""Malformed specs: every problem names the exact field and says what is wrong in plain words.

Each case of the table takes a valid base spec (below, independent of the example specs
in include/ so that editing those cannot break these tests), applies one mutation, and
expects exactly one error: at ``field``, with ``fragment`` in its problem text.
"""

from __future__ import annotations

import copy
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from opsdag import paths
from opsdag.spec.common import format_duration, parse_duration
from opsdag.spec.loader import KINDS, load_file, load_kind, parse_spec
from opsdag.spec.service import Metric

BASE: dict[str, dict[str, Any]] = {
    "services": {
        "name": "checkout",
        "description": "Checkout API.",
        "owners": ["shop-team"],
        "platform": {
            "kind": "kubernetes",
            "namespace": "shop",
            "deployment": "checkout",
            "router": {"kind": "nginx", "ingress": "checkout"},
        },
        "image": {"repository": "registry.example.com/shop/checkout"},
        "strategy": "canary",
        "canary": {
            "steps": [
                {"weight": 5, "bake": "5m"},
                {"weight": 25, "bake": "10m", "approval": True},
                {"weight": 50, "bake": "10m"},
                {"weight": 100, "bake": "10m"},
            ]
        },
        "analysis": {
            "metrics": [
                {
                    "name": "error-rate",
                    "query": 'sum(rate(http_requests_total{$canary, code=~"5.."}[1m]))',
                    "baseline_query": 'sum(rate(http_requests_total{$stable, code=~"5.."}[1m]))',
                    "max": 0.02,
                    "max_ratio": 2,
                },
                {
                    "name": "p95-latency",
                    "query": "histogram_quantile(0.95, sum by (le) (rate(latency_bucket{$canary}[1m])))",
                    "max": 0.5,
                },
            ]
        },
        "notifications": {"slack": {"channel": "#releases"}},
    },
    "databases": {
        "name": "orders-db",
        "owners": ["shop-team"],
        "connection_id": "postgres_orders",
        "backup": {"method": "logical", "schedule": "0 2 * * *", "storage": "s3://backups/orders"},
        "retention": {"keep_last": 3},
        "drill": {
            "target_conn_id": "postgres_drill",
            "checks": [{"name": "orders-present", "sql": "select count(*) > 0 from orders", "expect": True}],
        },
        "objectives": {"rto": "15m", "rpo": "26h"},
    },
    "runbooks": {
        "name": "canary-errors",
        "owners": ["platform-team"],
        "alerts": ["HighCanaryErrorRate", "CanaryDown"],
        "steps": [
            {"action": "check_metric", "name": "confirm", "query": "sum(rate(x[1m]))", "above": 0},
            {"action": "terminate_idle_connections", "database": "orders-db", "older_than": "10m"},
            {"action": "pg_connections", "name": "connections", "connection_id": "postgres_orders"},
            {"action": "wait", "duration": "30s"},
            {"action": "notify", "message": "rolled back"},
        ],
    },
}

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parts(path: str) -> list[str | int]:
    return [int(index) if index else key for key, index in _PART.findall(path)]


def _parent(data: Any, path: str) -> tuple[Any, str | int]:
    *head, last = _parts(path)
    for part in head:
        data = data[part]
    return data, last


def put(path: str, value: Any):
    def mutate(data: dict[str, Any]) -> None:
        parent, last = _parent(data, path)
        if isinstance(parent, list) and last == len(parent):
            parent.append(value)
        else:
            parent[last] = value

    return mutate


def drop(path: str):
    def mutate(data: dict[str, Any]) -> None:
        parent, last = _parent(data, path)
        del parent[last]

    return mutate


def both(*mutations):
    def mutate(data: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(data)

    return mutate


S, D, R = "services", "databases", "runbooks"
BG = {"pre_promotion_bake": "5m", "post_promotion_bake": "5m"}
SANDBOX = put("platform", {"kind": "sandbox", "instances": 2})

# (id, kind, mutation, exact field, fragment of the problem)
# fmt: off
CASES = [
    # unknown keys, at several depths
    ("unknown-top", S, put("colour", "red"), "colour", "unknown key; allowed here: name, description"),
    ("unknown-top-typo", S, put("analysys", {}), "analysys", "did you mean 'analysis'?"),
    ("unknown-platform", S, put("platform.replica", 3), "platform.replica", "unknown key"),
    ("unknown-router", S, put("platform.router.host", "x"), "platform.router.host",
     "allowed here: kind, ingress"),
    ("unknown-canary-step", S, put("canary.steps[1].bake_time", "1m"), "canary.steps[1].bake_time",
     "did you mean 'bake'?"),
    ("unknown-metric", S, put("analysis.metrics[0].threshold", 1), "analysis.metrics[0].threshold",
     "unknown key; allowed here: name, query"),
    ("unknown-notification", S, put("notifications.email", "x"), "notifications.email",
     "allowed here: slack"),
    # missing required fields
    ("missing-owners", S, drop("owners"), "owners", "required but missing"),
    ("missing-analysis", S, drop("analysis"), "analysis", "required but missing"),
    ("missing-repository", S, drop("image.repository"), "image.repository", "required but missing"),
    ("missing-bake", S, drop("canary.steps[0].bake"), "canary.steps[0].bake", "required but missing"),
    ("missing-deployment", S, drop("platform.deployment"), "platform.deployment", "required but missing"),
    # names
    ("name-not-dns", S, put("name", "Checkout_API"), "name", "is not a DNS-1123 name"),
    ("name-too-long", S, put("name", "a" * 64), "name", "longer than 63 characters"),
    ("name-not-string", S, put("name", 5), "name", "must be a string, not 5"),
    ("namespace-not-dns", S, put("platform.namespace", "Shop"), "platform.namespace",
     "is not a DNS-1123 name"),
    ("metric-name-pattern", S, put("analysis.metrics[1].name", "P95 latency"), "analysis.metrics[1].name",
     "does not have the expected form"),
    # canary weights
    ("weights-not-increasing", S, put("canary.steps[2].weight", 20), "canary.steps[2].weight",
     "weights must strictly increase: 20 comes after 25"),
    ("weights-equal", S, put("canary.steps[1].weight", 5), "canary.steps[1].weight", "strictly increase"),
    ("last-weight-not-100", S, put("canary.steps[3].weight", 90), "canary.steps[3].weight",
     "the last step must send 100 % of traffic, not 90"),
    ("weight-zero", S, put("canary.steps[0].weight", 0), "canary.steps[0].weight",
     "must be at least 1, not 0"),
    ("weight-over-100", S, put("canary.steps[3].weight", 101), "canary.steps[3].weight",
     "must be at most 100, not 101"),
    ("weight-not-number", S, put("canary.steps[0].weight", "ten"), "canary.steps[0].weight",
     "must be a whole number, not 'ten'"),
    ("steps-empty", S, put("canary.steps", []), "canary.steps", "must not be empty"),
    # durations
    ("bake-10x", S, put("canary.steps[1].bake", "10x"), "canary.steps[1].bake", "'10x' is not a duration"),
    ("bake-negative", S, put("canary.steps[1].bake", "-5s"), "canary.steps[1].bake",
     "must be a positive duration"),
    ("bake-zero", S, put("canary.steps[1].bake", 0), "canary.steps[1].bake", "must be a positive duration"),
    ("bake-true", S, put("canary.steps[1].bake", True), "canary.steps[1].bake", "not true"),
    ("bake-empty", S, put("canary.steps[1].bake", None), "canary.steps[1].bake", "not empty"),
    ("bake-huge", S, put("canary.steps[1].bake", "99999999999d"), "canary.steps[1].bake", "too long"),
    ("interval-bad", S, put("analysis.metrics[0].interval", "5 seconds"), "analysis.metrics[0].interval",
     "is not a duration"),
    # metrics
    ("query-no-placeholder", S, put("analysis.metrics[1].query", "sum(up)"), "analysis.metrics[1].query",
     "$canary or $stable"),
    ("baseline-no-placeholder", S, put("analysis.metrics[0].baseline_query", "sum(up)"),
     "analysis.metrics[0].baseline_query", "$canary or $stable"),
    ("metric-without-bound", S, drop("analysis.metrics[1].max"), "analysis.metrics[1]",
     "give at least one bound: max, min or max_ratio"),
    ("ratio-without-baseline", S, put("analysis.metrics[1].max_ratio", 2), "analysis.metrics[1].max_ratio",
     "add baseline_query"),
    ("ratio-zero", S, put("analysis.metrics[0].max_ratio", 0), "analysis.metrics[0].max_ratio",
     "must be more than 0, not 0"),
    ("min-above-max", S, put("analysis.metrics[1].min", 0.9), "analysis.metrics[1].min",
     "min (0.9) is greater than max (0.5)"),
    ("duplicate-metric-names", S, put("analysis.metrics[1].name", "error-rate"), "analysis.metrics[1].name",
     "metric names must be unique; 'error-rate' is repeated"),
    ("metrics-empty", S, put("analysis.metrics", []), "analysis.metrics", "must not be empty"),
    ("max-nan", S, put("analysis.metrics[1].max", float("nan")), "analysis.metrics[1].max",
     "must be a finite number, not nan"),
    # platform and router
    ("platform-kind-unknown", S, put("platform.kind", "ecs"), "platform.kind",
     "'ecs' is not a known kind; use one of: sandbox, kubernetes"),
    ("platform-kind-missing", S, drop("platform.kind"), "platform.kind",
     "required but missing; use one of: sandbox, kubernetes"),
    ("platform-not-mapping", S, put("platform", "sandbox"), "platform",
     "must be a mapping of keys to values, not 'sandbox'"),
    ("kubernetes-without-namespace", S, drop("platform.namespace"), "platform.namespace",
     "required but missing"),
    ("router-kind-unknown", S, put("platform.router.kind", "istio"), "platform.router.kind",
     "'istio' is not a known kind; use one of: replica-ratio, nginx, gateway-api"),
    ("router-missing-its-field", S, put("platform.router", {"kind": "gateway-api"}),
     "platform.router.http_route",
     "required but missing"),
    ("sandbox-too-many", S, put("platform", {"kind": "sandbox", "instances": 9}), "platform.instances",
     "must be at most 8, not 9"),
    # image
    ("repository-with-tag", S, put("image.repository", "registry.example.com/shop/checkout:1.2"),
     "image.repository", "must be a repository without tag or digest"),
    ("repository-with-digest", S, put("image.repository", "shop/checkout@sha256:abc"), "image.repository",
     "without tag or digest"),
    ("repository-uppercase", S, put("image.repository", "registry.example.com/Shop/checkout"),
     "image.repository",
     "is not an image repository"),
    ("build-builder-unknown", S, put("image.build", {"context": ".", "builder": "buildah"}),
     "image.build.builder",
     "must be 'docker' or 'kaniko', not 'buildah'"),
    # strategy
    ("strategy-unknown", S, put("strategy", "blue-green"), "strategy",
     "must be 'canary', 'bluegreen' or 'rolling', not 'blue-green'"),
    ("canary-without-steps", S, drop("canary"), "canary", "needs canary.steps"),
    ("default-strategy-without-steps", S, both(drop("strategy"), drop("canary")), "canary",
     "needs canary.steps"),
    ("owners-not-list", S, put("owners", "shop-team"), "owners", "must be a list, not 'shop-team'"),
    ("slack-channel", S, put("notifications.slack.channel", "Releases Channel"),
     "notifications.slack.channel",
     "does not have the expected form"),
    # databases
    ("cron-bad", D, put("backup.schedule", "61 2 * * *"), "backup.schedule", "is not a schedule"),
    ("cron-six-fields", D, put("backup.schedule", "0 0 2 * * *"), "backup.schedule", "five cron fields"),
    ("backup-method-unknown", D, put("backup.method", "snapshot"), "backup.method",
     "must be 'logical' or 'physical', not 'snapshot'"),
    ("keep-last-zero", D, put("retention.keep_last", 0), "retention.keep_last", "must be at least 1, not 0"),
    ("missing-rto", D, drop("objectives.rto"), "objectives.rto", "required but missing"),
    ("rpo-not-duration", D, put("objectives.rpo", "1 week"), "objectives.rpo", "is not a duration"),
    ("storage-url", D, put("backup.storage", "ftp://backups/orders"), "backup.storage",
     "must be an absolute path or a file://, s3:// or gs:// URL"),
    ("storage-relative", D, put("backup.storage", "backups"), "backup.storage", "absolute path"),
    ("drill-expect-list", D, put("drill.checks[0].expect", [1]), "drill.checks[0].expect",
     "must be a string, a number or true/false, not a list"),
    ("unknown-drill-key", D, put("drill.restore_to", "x"), "drill.restore_to", "unknown key"),
    # runbooks
    ("action-unknown", R, put("steps[1].action", "reboot"), "steps[1].action",
     "'reboot' is not a known action; use one of: check_metric, notify, escalate, service_status"),
    ("action-not-string", R, put("steps[1].action", ["scale"]), "steps[1].action",
     "a list is not a known action"),
    ("action-missing", R, drop("steps[4].action"), "steps[4].action", "required but missing; use one of:"),
    ("missing-alerts", R, drop("alerts"), "alerts", "required but missing"),
    ("alerts-empty", R, put("alerts", []), "alerts", "must not be empty"),
    ("alert-empty-string", R, put("alerts[1]", ""), "alerts[1]", "must not be empty"),
    ("duplicate-alerts", R, put("alerts[2]", "HighCanaryErrorRate"), "alerts[2]",
     "the alert 'HighCanaryErrorRate' is listed twice"),
    ("args-of-another-action", R, put("steps[1].replicas", 3), "steps[1].replicas",
     "unknown key; allowed here: name, database, connection_id, action, older_than"),
    ("scale-to-zero", R, put("steps[5]", {"action": "scale", "service": "checkout", "replicas": 0}),
     "steps[5].replicas", "must be at least 1, not 0"),
    ("scale-missing-replicas", R, put("steps[5]", {"action": "scale", "service": "checkout"}),
     "steps[5].replicas", "required but missing"),
    ("terminate-two-servers", R, put("steps[1].connection_id", "postgres_orders"), "steps[1]",
     "exactly one of database (a database spec) or connection_id"),
    ("terminate-no-server", R, drop("steps[1].database"), "steps[1]", "exactly one of database"),
    ("terminate-older-than-bad", R, put("steps[1].older_than", "a while"), "steps[1].older_than",
     "is not a duration"),
    ("terminate-older-than-missing", R, drop("steps[1].older_than"), "steps[1].older_than",
     "required but missing"),
    ("terminate-database-not-dns", R, put("steps[1].database", "Orders"), "steps[1].database",
     "is not a DNS-1123 name"),
    ("check-timeout-without-verify", R, put("steps[0].timeout", "1m"), "steps[0].timeout",
     "only a verify check waits"),
    ("check-kind-unknown", R, put("steps[0].check", "confirm"), "steps[0].check", "assess"),
    ("notify-empty", R, put("steps[4].message", ""), "steps[4].message", "must not be empty"),
    ("check-metric-without-bound", R, drop("steps[0].above"), "steps[0]", "above, below or both"),
    ("duplicate-step-names", R, put("steps[4].name", "confirm"), "steps[4].name",
     "step names must be unique; 'confirm' is repeated"),
    ("wait-duration-bad", R, put("steps[3].duration", "soon"), "steps[3].duration", "is not a duration"),
    ("step-name-pattern", R, put("steps[0].name", "Confirm It"), "steps[0].name",
     "does not have the expected form"),
    ("step-not-mapping", R, put("steps[5]", "notify"), "steps[5]", "must be a mapping of keys to values"),
    ("service-not-dns", R, put("steps[5]", {"action": "restart_instances", "service": "Checkout"}),
     "steps[5].service", "is not a DNS-1123 name"),
    ("guards-typo", R, put("guards", {"max_run_per_hour": 2}), "guards.max_run_per_hour",
     "did you mean 'max_runs_per_hour'?"),
    ("guards-dry-run-not-bool", R, put("guards", {"dry_run": "maybe"}), "guards.dry_run",
     "must be true or false, not 'maybe'"),
    # blue-green and rolling (on the sandbox: rolling needs the instance count in the spec)
    ("bluegreen-without-bake", S, put("bluegreen", {"post_promotion_bake": "5m"}),
     "bluegreen.pre_promotion_bake", "required but missing"),
    ("bluegreen-share-too-big", S, put("bluegreen", {**BG, "preview_share": 0.9}), "bluegreen.preview_share",
     "must be at most 0.5, not 0.9"),
    ("bluegreen-share-zero", S, put("bluegreen", {**BG, "preview_share": 0}), "bluegreen.preview_share",
     "must be more than 0, not 0"),
    ("bluegreen-zero-bake", S, put("bluegreen", {**BG, "post_promotion_bake": "0s"}),
     "bluegreen.post_promotion_bake", "'0s' must be a positive duration"),
    ("bluegreen-bad-delay", S, put("bluegreen", {**BG, "scale_down_delay": "later"}),
     "bluegreen.scale_down_delay", "is not a duration"),
    ("bluegreen-typo", S, put("bluegreen", {**BG, "preview_shares": 0.1}), "bluegreen.preview_shares",
     "did you mean 'preview_share'?"),
    ("bluegreen-default-without-section", S, put("strategy", "bluegreen"), "bluegreen",
     "the bluegreen strategy (the default) needs a bluegreen section"),
    ("rolling-no-progress", S,
     both(SANDBOX, put("rolling", {"bake": "1m", "max_surge": 0, "max_unavailable": 0})), "rolling.max_surge",
     "max_surge and max_unavailable cannot both be 0"),
    ("rolling-negative-surge", S, both(SANDBOX, put("rolling", {"bake": "1m", "max_surge": -1})),
     "rolling.max_surge", "must be at least 0, not -1"),
    ("rolling-without-bake", S, both(SANDBOX, put("rolling", {"max_surge": 1})), "rolling.bake",
     "required but missing"),
    ("rolling-unknown-key", S, both(SANDBOX, put("rolling", {"bake": "1m", "batch": 2})), "rolling.batch",
     "unknown key; allowed here: max_surge, max_unavailable, bake"),
    ("preview-share-on-kubernetes", S,
     put("bluegreen", {"pre_promotion_bake": "1m", "post_promotion_bake": "1m", "preview_share": 0.1}),
     "bluegreen.preview_share", "is the share of the sandbox's synthetic load; on kubernetes the preview"),
    ("rolling-on-kubernetes", S, put("rolling", {"bake": "1m"}), "rolling",
     "rolling batches are planned when the DAG is built: set platform.replicas to the kubernetes "
     "Deployment's spec.replicas"),
    ("rolling-default-without-section", S, both(SANDBOX, put("strategy", "rolling")), "rolling",
     "the rolling strategy (the default) needs a rolling section"),
    # smoke checks, preflight, minimum traffic
    ("smoke-path-relative", S, put("smoke", [{"name": "health", "path": "healthz"}]), "smoke[0].path",
     "does not have the expected form"),
    ("smoke-status-impossible", S, put("smoke", [{"name": "health", "path": "/", "expect_status": 999}]),
     "smoke[0].expect_status", "must be at most 599, not 999"),
    ("dependency-without-bound", S, put("preflight", {"dependencies": [{"name": "db", "query": "up"}]}),
     "preflight.dependencies[0]", "give at least one bound: min or max"),
    ("backup-age-bad", S, put("preflight", {"backup": {"database": "orders-db", "max_age": "fresh"}}),
     "preflight.backup.max_age", "is not a duration"),
    ("backup-database-not-dns", S, put("preflight", {"backup": {"database": "Orders", "max_age": "1d"}}),
     "preflight.backup.database", "is not a DNS-1123 name"),
    ("min-requests-without-query", S, put("analysis.metrics[0].min_requests", 50),
     "analysis.metrics[0].requests_query", "min_requests needs requests_query"),
    ("requests-query-without-canary", S,
     both(put("analysis.metrics[0].min_requests", 50), put("analysis.metrics[0].requests_query", "sum(x)")),
     "analysis.metrics[0].requests_query", "select it with $canary"),
    ("min-requests-zero", S, put("analysis.metrics[0].min_requests", 0), "analysis.metrics[0].min_requests",
     "must be at least 1, not 0"),
]
# fmt: on


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("kind", list(BASE))
def test_base_specs_are_valid(kind: str) -> None:
    spec, errors = parse_spec(KINDS[kind], copy.deepcopy(BASE[kind]), "base.yaml")
    assert errors == []
    assert spec is not None


@pytest.mark.parametrize(
    ("kind", "mutate", "field", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_spec(kind: str, mutate: Any, field: str, fragment: str) -> None:
    data = copy.deepcopy(BASE[kind])
    mutate(data)
    spec, errors = parse_spec(KINDS[kind], data, "x.yaml")
    assert spec is None
    assert [(e.file, e.field) for e in errors] == [("x.yaml", field)], [str(e) for e in errors]
    assert fragment in errors[0].problem
    assert str(errors[0]) == f"x.yaml: {field}: {errors[0].problem}"
    assert "Input should" not in errors[0].problem and "Field required" not in errors[0].problem


def test_several_problems_are_all_reported_in_order() -> None:
    data = copy.deepcopy(BASE["services"])
    put("canary.steps[0].bake", "10x")(data)
    put("analysis.metrics[1].colour", "red")(data)
    _, errors = parse_spec(KINDS["services"], data, "x.yaml")
    assert [e.field for e in errors] == ["canary.steps[0].bake", "analysis.metrics[1].colour"]


def test_a_broken_baseline_query_does_not_also_blame_max_ratio() -> None:
    data = copy.deepcopy(BASE["services"])
    put("analysis.metrics[0].baseline_query", "sum(up)")(data)
    _, errors = parse_spec(KINDS["services"], data, "x.yaml")
    assert [e.field for e in errors] == ["analysis.metrics[0].baseline_query"]


# --- file level ---------------------------------------------------------------------------

# fmt: off
FILE_CASES = [
    ("yaml-syntax", "name: checkout\nplatform:\n  kind: [sandbox\n", "line 4, column 1", "not valid YAML"),
    ("yaml-bad-indent", "name: checkout\n  owners: [a]\n", "line 2, column 9", "not valid YAML"),
    ("yaml-tab", "name: checkout\nowners:\n\t- a\n", "line 3, column 1", "not valid YAML"),
    ("duplicate-key", "name: checkout\nstrategy: canary\nstrategy: rolling\n", "line 3, column 1",
     "the key 'strategy' appears twice"),
    ("list-not-mapping", "- name: checkout\n- name: payments\n", "(top level)",
     "must hold a mapping of keys to values, not a list"),
    ("scalar-not-mapping", "checkout\n", "(top level)",
     "must hold a mapping of keys to values, not 'checkout'"),
    ("empty-file", "", "(top level)", "the file is empty"),
    ("comments-only", "# nothing yet\n", "(top level)", "the file is empty"),
    ("two-documents", "name: a\n---\nname: b\n", "line 2, column 1", "not valid YAML"),
]
# fmt: on


@pytest.mark.parametrize(
    ("text", "field", "fragment"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_malformed_file(tmp_path: Path, text: str, field: str, fragment: str) -> None:
    path = tmp_path / "checkout.yaml"
    path.write_text(text, encoding="utf-8")
    spec, errors = load_file(path, KINDS["services"], "services/checkout.yaml")
    assert spec is None
    assert [(e.file, e.field) for e in errors] == [("services/checkout.yaml", field)], [
        str(e) for e in errors
    ]
    assert fragment in errors[0].problem


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "checkout.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    _, errors = load_file(path, KINDS["services"])
    assert [(e.field, e.problem) for e in errors] == [("(file)", "is not UTF-8 text")]


def _write(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_name_must_match_file_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "payments.yaml", BASE["services"])
    spec, errors = load_file(path, KINDS["services"], "payments.yaml")
    assert spec is None
    assert [str(e) for e in errors] == ["payments.yaml: name: 'checkout' must match the file name 'payments'"]


def test_name_mismatch_is_reported_with_the_other_problems(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE["services"])
    drop("owners")(data)
    path = _write(tmp_path / "payments.yaml", data)
    _, errors = load_file(path, KINDS["services"], "payments.yaml")
    assert [e.field for e in errors] == ["owners", "name"]


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    _write(tmp_path / "services" / "checkout.yaml", BASE["services"])
    _write(tmp_path / "services" / "checkout.yml", BASE["services"])
    loaded = load_kind(tmp_path, "services")
    assert list(loaded.specs) == ["checkout"]
    assert loaded.files["checkout"].name == "checkout.yaml"
    assert len(loaded.errors) == 1
    error = loaded.errors[0]
    assert (Path(error.file).name, error.field) == ("checkout.yml", "name")
    assert "'checkout' is already defined in" in error.problem and "checkout.yaml" in error.problem


def test_one_broken_file_does_not_hide_the_others(tmp_path: Path) -> None:
    _write(tmp_path / "services" / "checkout.yaml", BASE["services"])
    (tmp_path / "services" / "broken.yaml").write_text("name: [", encoding="utf-8")
    (tmp_path / "services" / ".#checkout.yaml").write_text("editor lock file", encoding="utf-8")
    loaded = load_kind(tmp_path, "services")
    assert list(loaded.specs) == ["checkout"]
    assert [Path(e.file).name for e in loaded.errors] == ["broken.yaml"]


# --- what is valid ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_shipped_specs_load_without_errors(kind: str) -> None:
    include = paths.include_dir()
    loaded = load_kind(include, kind)
    assert loaded.errors == []
    assert loaded.specs, f"no {kind} in {include}"
    assert sorted(loaded.specs) == sorted(p.stem for p in (include / kind).glob("*.y*ml"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        (" 10 m ", timedelta(minutes=10)),
        ("+15s", timedelta(seconds=15)),
        (45, timedelta(seconds=45)),
        (1.5, timedelta(seconds=1.5)),
        (timedelta(minutes=3), timedelta(minutes=3)),
    ],
)
def test_durations_parse(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["500ms", "30s", "5m", "2h", "1d", "90s"])
def test_durations_format_back(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)
    assert format_duration(parse_duration(text)) == text


def test_metric_interval_default_is_a_duration() -> None:
    metric = Metric(name="errors", query="sum(x{$canary})", max=1)
    assert metric.interval == timedelta(seconds=5)
    assert metric.model_dump(mode="json")["interval"] == "5s"


def test_a_kubernetes_bluegreen_spec_survives_its_json_round_trip() -> None:
    """Triggers rebuild the spec from its JSON, which carries every default (preview_share too)."""
    from opsdag.spec.loader import read_yaml
    from opsdag.spec.service import ServiceSpec

    data = read_yaml((paths.include_dir() / "services" / "checkout.yaml").read_text(encoding="utf-8"))
    data["bluegreen"] = {"pre_promotion_bake": "1m", "post_promotion_bake": "1m"}
    spec = ServiceSpec.model_validate(data)
    assert ServiceSpec.model_validate(spec.model_dump(mode="json")) == spec
