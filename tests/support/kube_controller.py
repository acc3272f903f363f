"""A Kubernetes API for tests: kmock's emulator over HTTP, and a controller playing the kubelet.

No kube-apiserver can be installed here, so tests talk HTTP to kmock's
``KubernetesEmulator`` (an in-memory object store behind the Kubernetes REST paths) with
the official ``kubernetes`` client, through the same Airflow connection users configure.

- ``KubeEmulator``: the emulator on a free loopback port, served from its own thread and
  event loop (so that synchronous clients can call it). ``connection_json()`` is an
  ``AIRFLOW_CONN_KUBERNETES_DEFAULT`` value whose ``kube_config`` extra points at it (no
  auth); ``core_v1()`` is a client of its own (not the global default configuration).
  ``GET .../pods/<name>/log`` is answered from ``logs`` (the emulator has no containers,
  so no logs of its own); ``tail_lines`` is honoured. ``fail(action, pod, status, times)``
  makes the next ``times`` create/get/delete requests for a pod answer ``status`` (a
  Kubernetes ``Status`` body); the controller's own requests are never failed. Note: kmock
  stores a created object even when a reaction answers the request, so a failed create
  has still created the pod (which is what a lost answer looks like to a client).
- ``BuildPodController``: what the kubelet would do to build pods (labels
  ``app.kubernetes.io/managed-by=opsdag``, ``app.kubernetes.io/component=image-build``):
  a new pod gets a uid, a creation time and ``Pending``/``ContainerCreating``, then
  ``Running``, then after ``run_seconds`` its build container terminates as the pod's
  ``BuildBehaviour`` says (exit code, reason, termination message, log lines), or stays
  waiting with a reason (``ErrImagePull``) or running forever (``hang``). Status goes
  through the pods' ``status`` subresource, as the kubelet writes it. Deletion is
  graceful as in a cluster: the controller puts a finalizer on each build pod it starts
  and lifts it ``grace_seconds`` after the pod is marked for deletion, so a deleted pod
  lingers, ``Terminating`` (``deletionTimestamp`` set), before it is gone.

What the emulator does not do, and this module does not fake: label selectors (listing
returns every pod of the namespace: the controller filters itself), graceful deletion
by itself (a pod without finalizers vanishes at once: hence the controller's finalizer),
resourceVersion, PUT, and the pods' containers (hence the logs served from ``logs``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kmock
from kubernetes import client
from kubernetes.client.exceptions import ApiException


class KubeEmulator:
    """kmock's KubernetesEmulator on a loopback port, run in a background thread."""

    def __init__(self, namespace: str = "default") -> None:
        self.namespace = namespace
        self.logs: dict[tuple[str, str], str] = {}  # (namespace, pod) -> the build container's log
        self.faults: list[Fault] = []
        self._faults_lock = threading.Lock()
        self.url = ""
        self.emulator: kmock.KubernetesEmulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)

    def start(self) -> KubeEmulator:
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError(f"the Kubernetes emulator did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def __enter__(self) -> KubeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by start()
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            emulator.resources["v1/pods"] = kmock.ResourceInfo(kind="Pod", namespaced=True)
            emulator[kmock.subresource("log")] << self._serve_log
            for action in (kmock.action.CREATE, kmock.action.FETCH, kmock.action.DELETE):
                emulator[action] << self._serve_fault
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()

    def _serve_log(self, request: kmock.Request) -> Any:
        text = self.logs.get((request.namespace or "", request.name or ""))
        if text is None:
            return kmock.Response(
                status=400,
                payload={
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 400,
                    "reason": "BadRequest",
                    "message": f'container "build" in pod "{request.name}" is waiting to start',
                },
            )
        lines = text.splitlines(keepends=True)
        tail = request.params.get("tailLines")
        if tail is not None:
            lines = lines[-int(tail) :] if int(tail) > 0 else []
        return kmock.Response(payload="".join(lines).encode(), headers={"Content-Type": "text/plain"})

    def fail(self, action: str, pod: str, status: int, times: int = 1) -> Fault:
        """Answer the next ``times`` ``action`` (create, get, delete) requests for ``pod`` with ``status``."""
        fault = Fault(action, pod, status, times)
        with self._faults_lock:
            self.faults.append(fault)
        return fault

    def _serve_fault(self, request: kmock.Request) -> Any:
        # Not ours: NotImplementedError passes the request on to the emulator. (Returning
        # NotImplemented would mean "depleted": kmock would disable this reaction for good.)
        if request.subresource is not None or request.headers.get("User-Agent") == CONTROLLER_AGENT:
            raise NotImplementedError
        action = {
            kmock.action.CREATE: "create",
            kmock.action.FETCH: "get",
            kmock.action.DELETE: "delete",
        }.get(request.action)
        name = request.name or ((request.data or {}).get("metadata") or {}).get("name")
        with self._faults_lock:
            for fault in self.faults:
                if fault.left > 0 and (fault.action, fault.pod) == (action, name):
                    fault.left -= 1
                    fault.served += 1
                    break
            else:
                raise NotImplementedError
        reason = {403: "Forbidden", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
        return kmock.Response(
            status=fault.status,
            payload={
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": fault.status,
                "reason": reason.get(fault.status, "Unknown"),
                "message": f'pods "{name}": {fault.status} injected by the test',
            },
        )

    def create_requests(self, name: str) -> int:
        """How many create requests the API received for the pod ``name`` (accepted or not)."""
        assert self.emulator is not None
        return sum(
            1
            for request in list(self.emulator)
            if request.action == kmock.action.CREATE
            and (request.data or {}).get("metadata", {}).get("name") == name
        )

    def created_bodies(self, name: str) -> list[dict[str, Any]]:
        """The bodies of the create requests for the pod ``name``, as sent."""
        assert self.emulator is not None
        return [
            request.data
            for request in list(self.emulator)
            if request.action == kmock.action.CREATE
            and (request.data or {}).get("metadata", {}).get("name") == name
        ]

    def kubeconfig(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "anonymous", "user": {}}],
            "contexts": [
                {
                    "name": "kmock",
                    "context": {"cluster": "kmock", "user": "anonymous", "namespace": self.namespace},
                }
            ],
            "current-context": "kmock",
        }

    def connection_json(self) -> str:
        """An ``AIRFLOW_CONN_KUBERNETES_DEFAULT`` value: the kube config as the connection's extra."""
        return json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": self.kubeconfig()}})

    def core_v1(self, user_agent: str | None = None) -> client.CoreV1Api:
        configuration = client.Configuration()
        configuration.host = self.url
        api_client = client.ApiClient(configuration)
        if user_agent is not None:
            api_client.user_agent = user_agent
        return client.CoreV1Api(api_client)


CONTROLLER_AGENT = "opsdag-test-kubelet"


@dataclass
class Fault:
    """An injected API error: ``left`` more ``action`` requests for ``pod`` answer ``status``."""

    action: str
    pod: str
    status: int
    left: int
    served: int = 0


@dataclass(frozen=True)
class BuildBehaviour:
    """How the build container of a pod ends (or does not)."""

    exit_code: int = 0
    reason: str = "Completed"
    message: str | None = None  # the termination message; None: a digest made from the pod's name
    logs: str = "INFO[0000] Retrieving image manifest\nINFO[0003] Pushed image\n"
    run_seconds: float = 0.3
    waiting_reason: str | None = None  # stays waiting with this reason (e.g. ErrImagePull)
    hang: bool = False  # keeps running


FINALIZER = "kube-controller.test/graceful-deletion"


def digest_for(name: str) -> str:
    """The digest the controller reports for a successful pod ``name`` (deterministic)."""
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


@dataclass
class _Tracked:
    behaviour: BuildBehaviour
    seen_at: float
    started_at: datetime | None = None
    deleting_since: float | None = None
    stage: str = "pending"


@dataclass
class BuildPodController:
    """Plays the kubelet for build pods in ``namespace`` of ``kube``; see the module docstring."""

    kube: KubeEmulator
    namespace: str = "default"
    default: BuildBehaviour = field(default_factory=BuildBehaviour)
    interval: float = 0.05
    grace_seconds: float = 0.3
    behaviours: dict[str, BuildBehaviour] = field(default_factory=dict)  # pod name -> behaviour
    started_pods: list[str] = field(default_factory=list)  # every fresh pod it started, in order
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._api = self.kube.core_v1(user_agent=CONTROLLER_AGENT)
        self._tracked: dict[tuple[str, str], _Tracked] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="build-pod-controller", daemon=True)

    def expect(self, name: str, behaviour: BuildBehaviour) -> None:
        """Make the pod ``name`` (when it appears) behave as ``behaviour``."""
        self.behaviours[name] = behaviour

    def start(self) -> BuildPodController:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except ApiException as error:
                if error.status != 404:  # a pod deleted between two calls is what a kubelet sees too
                    self.errors.append(repr(error))
            except Exception as error:  # keep playing; tests assert on errors
                self.errors.append(repr(error))
            self._stop.wait(self.interval)

    def _step(self) -> None:
        pods = self._api.list_namespaced_pod(self.namespace).items
        present = set()
        for pod in pods:
            labels = pod.metadata.labels or {}
            if (
                labels.get("app.kubernetes.io/managed-by") != "opsdag"
                or labels.get("app.kubernetes.io/component") != "image-build"
            ):
                continue
            name = pod.metadata.name
            key = (self.namespace, name)
            present.add(key)
            if pod.metadata.uid is None:  # a fresh pod (the emulator assigns no uid)
                self._admit(name)
                continue
            tracked = self._tracked.get(key)
            if tracked is None:
                continue
            if pod.metadata.deletion_timestamp is not None:
                tracked.deleting_since = tracked.deleting_since or time.monotonic()
                if time.monotonic() - tracked.deleting_since >= self.grace_seconds:
                    self._api.patch_namespaced_pod(name, self.namespace, {"metadata": {"finalizers": []}})
                continue
            self._advance(name, tracked)
        for key in list(self._tracked):
            if key not in present:
                del self._tracked[key]

    def _admit(self, name: str) -> None:
        behaviour = self.behaviours.get(name, self.default)
        self._api.patch_namespaced_pod(
            name,
            self.namespace,
            {
                "metadata": {
                    "uid": str(uuid.uuid4()),
                    "creationTimestamp": _stamp(_now()),
                    "finalizers": [FINALIZER],
                }
            },
        )
        self._set_state(name, "Pending", {"waiting": {"reason": "ContainerCreating"}})
        self._tracked[(self.namespace, name)] = _Tracked(behaviour, time.monotonic())
        self.started_pods.append(name)

    def _advance(self, name: str, tracked: _Tracked) -> None:
        behaviour = tracked.behaviour
        age = time.monotonic() - tracked.seen_at
        if tracked.stage == "pending" and age >= 0.1:
            if behaviour.waiting_reason is not None:
                self._set_state(
                    name,
                    "Pending",
                    {
                        "waiting": {
                            "reason": behaviour.waiting_reason,
                            "message": f"{behaviour.waiting_reason} (test controller)",
                        }
                    },
                )
                tracked.stage = "stuck"
                return
            tracked.started_at = _now()
            self._set_state(name, "Running", {"running": {"startedAt": _stamp(tracked.started_at)}})
            self.kube.logs[(self.namespace, name)] = behaviour.logs
            tracked.stage = "running"
        elif tracked.stage == "running" and not behaviour.hang and age >= 0.1 + behaviour.run_seconds:
            message = (
                behaviour.message
                if behaviour.message is not None
                else (digest_for(name) if behaviour.exit_code == 0 else None)
            )
            terminated: dict[str, Any] = {
                "exitCode": behaviour.exit_code,
                "reason": behaviour.reason,
                "startedAt": _stamp(tracked.started_at or _now()),
                "finishedAt": _stamp(_now()),
            }
            if message is not None:
                terminated["message"] = message
            self._set_state(
                name, "Succeeded" if behaviour.exit_code == 0 else "Failed", {"terminated": terminated}
            )
            tracked.stage = "done"

    def _set_state(self, name: str, phase: str, state: dict[str, Any]) -> None:
        pod = self._api.read_namespaced_pod(name, self.namespace)
        image = pod.spec.containers[0].image
        status = {
            "phase": phase,
            "containerStatuses": [
                {
                    "name": "build",
                    "image": image,
                    "imageID": "",
                    "ready": "running" in state,
                    "restartCount": 0,
                    "started": "running" in state,
                    "state": state,
                }
            ],
        }
        try:
            self._api.patch_namespaced_pod_status(name, self.namespace, {"status": status})
        except ApiException as error:
            if error.status != 404:  # deleted meanwhile: nothing to play
                raise


def _now() -> datetime:
    return datetime.now(tz=UTC)


def _stamp(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")
