"""``status`` of the whole sandbox: which server runs where, the fleet, and the text the CLI prints.

``sandbox_status`` reads the state directory into a ``SandboxStatus`` (its fleet part is
``fleet_status.FleetStatus``); ``to_dict()`` is ``python -m opsdag.sandbox status --json``
and ``format_status`` the text form. Neither holds a secret: PostgreSQL's and the
registry's passwords are only named by their files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opsdag.dev.sandbox import alertmanager_server as am
from opsdag.dev.sandbox.connections import alerts_token_file
from opsdag.dev.sandbox.demo_database import postgres_server
from opsdag.dev.sandbox.fleet_status import FleetStatus, InstanceStatus, TrackStatus, read_fleet_status
from opsdag.dev.sandbox.processes import ProcessTable
from opsdag.dev.sandbox.state import Layout, load_state, read_counts

COMPONENTS = (
    "postgres",
    "haproxy",
    "prometheus",
    "loadgen",
    "alertmanager",
    "postgres-exporter",
    "registry",
    "dockerd",
)


@dataclass(frozen=True)
class ComponentStatus:
    """One server of the sandbox: whether it runs, its PID and log, and where to reach it."""

    running: bool
    pid: int | None
    log: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"running": self.running, "pid": self.pid}
        if self.log is not None:
            result["log"] = self.log
        return {**result, **self.details}


@dataclass(frozen=True)
class SandboxStatus:
    """The servers (empty before the first ``up``) and the fleet (None while it is down)."""

    sandbox_dir: str
    connections_file: str
    components: Mapping[str, ComponentStatus] = field(default_factory=dict)
    fleet: FleetStatus | None = None

    @property
    def up(self) -> bool:
        """Every server runs and so does every stable process."""
        if self.fleet is None or not self.components:
            return False
        stable = self.fleet.stable.instances if self.fleet.stable else ()
        return all(i.running for i in stable) and all(c.running for c in self.components.values())

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "sandbox_dir": self.sandbox_dir,
            "up": self.up,
            "connections_file": self.connections_file,
        }
        result.update({name: component.to_dict() for name, component in self.components.items()})
        if self.fleet is not None:
            result.update(self.fleet.to_dict())
        return result


def _process(procs: ProcessTable, name: str, **details: Any) -> ComponentStatus:
    record = procs.read(name)
    if record is None:
        return ComponentStatus(False, None, details=details)
    return ComponentStatus(procs.alive(record), record.pid, record.log, details)


def _components(layout: Layout, state: Mapping[str, Any]) -> dict[str, ComponentStatus]:
    procs = layout.processes()
    server = postgres_server(layout)
    pg = state.get("postgres", {})
    ha = state.get("haproxy", {})
    stats = ha.get("stats_port")
    frontend = ha.get("frontend_port")
    counts = read_counts(layout) or {}
    loadgen = state.get("loadgen", {})
    keys = ("host", "port", "user", "password_file", "passfile", "database", "data_dir")
    alerts = state.get("alertmanager", {})
    webhook = alerts.get("webhook_url")
    exporter = state.get("postgres_exporter", {}).get("url")
    registry = state.get("registry", {})
    return {
        "postgres": ComponentStatus(
            server.running(), server.pid(), details={key: pg.get(key) for key in keys}
        ),
        "haproxy": _process(
            procs,
            "haproxy",
            frontend_url=f"http://127.0.0.1:{frontend}/" if frontend else None,
            stats_url=f"http://127.0.0.1:{stats}/stats" if stats else None,
            metrics_url=f"http://127.0.0.1:{stats}/metrics" if stats else None,
            runtime_socket=ha.get("socket"),
            backend=ha.get("backend"),
        ),
        "prometheus": _process(
            procs,
            "prometheus",
            url=state.get("prometheus", {}).get("url"),
            targets_file=str(layout.targets_file),
        ),
        "loadgen": _process(
            procs,
            "loadgen",
            rate=loadgen.get("rate"),
            counts_file=loadgen.get("counts_file") or str(layout.counts_file),
            total=counts.get("total"),
            by_version=counts.get("by_version"),
            by_status=counts.get("by_status"),
            updated_at=counts.get("updated_at"),
        ),
        "alertmanager": _process(
            procs,
            "alertmanager",
            url=alerts.get("url"),
            config=str(am.config_path(layout)),
            # None until `alerts-to` names Airflow: alerts go nowhere yet.
            webhook_url=None if webhook in (None, am.NOWHERE_URL) else webhook,
            token_file=str(alerts_token_file(layout)),
        ),
        "postgres-exporter": _process(
            procs,
            "postgres-exporter",
            metrics_url=f"{exporter}/metrics" if exporter else None,
        ),
        "registry": _process(
            procs,
            "registry",
            host=registry.get("host"),
            user=registry.get("user"),
            password_file=registry.get("password_file"),
            serves=registry.get("serves"),
        ),
        "dockerd": _process(procs, "dockerd", url=state.get("docker", {}).get("url")),
    }


def sandbox_status(layout: Layout | None = None) -> SandboxStatus:
    """What runs where: servers, ports/URLs, fleet versions and the traffic split (no secrets)."""
    layout = layout or Layout.default()
    state = load_state(layout)
    status = SandboxStatus(str(layout.root), str(layout.connections_file))
    if state is None:
        return status
    fleet = read_fleet_status(layout, state) if state.get("fleet") else None
    return SandboxStatus(status.sandbox_dir, status.connections_file, _components(layout, state), fleet)


def status(*, layout: Layout | None = None) -> dict[str, Any]:
    """``sandbox_status`` as the JSON the CLI prints."""
    return sandbox_status(layout).to_dict()


def format_status(status: SandboxStatus) -> str:
    """Human-readable ``status``."""
    lines = [f"sandbox {status.sandbox_dir}: {'up' if status.up else 'NOT up'}"]
    if not status.components:
        return "\n".join(lines)

    def flag(component: ComponentStatus) -> str:
        return f"running (pid {component.pid})" if component.running else "stopped"

    pg, ha, pr, lg, al, ex, rg, dk = (status.components[name] for name in COMPONENTS)
    d = pg.details
    lines.append(
        f"  postgres    {flag(pg)}  host={d['host']} port={d['port']} user={d['user']} "
        f"db={d['database']} password-file={d['password_file']}"
    )
    lines.append(
        f"  haproxy     {flag(ha)}  frontend={ha.details['frontend_url']} metrics={ha.details['metrics_url']}"
    )
    lines.append(f"              runtime socket={ha.details['runtime_socket']}")
    lines.append(f"  prometheus  {flag(pr)}  {pr.details['url']}  rules: include/alerts/*.yaml")
    posts = al.details["webhook_url"] or "nowhere yet (`python -m opsdag.sandbox alerts-to <airflow url>`)"
    lines.append(f"  alertmanager {flag(al)}  {al.details['url']}  posts to {posts}")
    lines.append(f"  pg-exporter {flag(ex)}  {ex.details['metrics_url']}")
    d = rg.details
    lines.append(
        f"  registry    {flag(rg)}  {d['host']} (serves {d['serves']}) user={d['user']} "
        f"password-file={d['password_file']}"
    )
    lines.append(f"  dockerd     {flag(dk)}  {dk.details['url']}")
    d = lg.details
    lines.append(
        f"  loadgen     {flag(lg)}  {d['rate']} req/s, {d['total']} answers, counts={d['counts_file']}"
    )
    if d["by_version"]:
        lines.append(
            "              by version: " + ", ".join(f"{k}={v}" for k, v in sorted(d["by_version"].items()))
        )
    if status.fleet is not None:
        lines += _fleet_lines(status.fleet)
    return "\n".join(lines)


def _ports(instances: tuple[InstanceStatus, ...]) -> str:
    return ", ".join(f"{i.slot}=:{i.port}{'' if i.running else ' (down)'}" for i in instances)


def _by_digest(track: TrackStatus) -> str:
    """`` (image repo@sha256:...)`` for a version deployed by digest: which image it is."""
    return f" ({track.image})" if track.image and "@" in track.image and track.version else ""


def _fleet_lines(fleet: FleetStatus) -> list[str]:
    stable = fleet.stable or TrackStatus(None, None, None)
    lines = [f"  stable      {stable.version}{_by_digest(stable)}  [{_ports(stable.instances)}]"]
    canary = fleet.canary
    if canary:
        failed = f"  FAILED: {canary.failed}" if canary.failed else ""
        name = f"{canary.version or canary.image}{_by_digest(canary)}"
        lines.append(f"  canary      {name}  [{_ports(canary.instances)}]{failed}")
    else:
        lines.append("  canary      none")
    traffic = fleet.traffic
    conf = traffic.configured if traffic else {}
    measured = traffic.measured if traffic else None
    answered = sum(measured.responses.values()) if measured else 0
    lines.append(
        f"  traffic     configured stable {conf.get('stable')} % / canary {conf.get('canary')} %; "
        f"measured stable {measured.stable if measured else None} % / "
        f"canary {measured.canary if measured else None} % "
        f"({answered} responses in {measured.window_s if measured else None} s)"
    )
    if fleet.preview is not None:
        lines.append(fleet.preview.line())
    return lines
