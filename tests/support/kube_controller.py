"""A Kubernetes API for tests: kmock's emulator over HTTP, and a controller playing the kubelet.

No kube-apiserver can be installed here, so tests talk HTTP to kmock's
``KubernetesEmulator`` (an in-memory object store behind the Kubernetes REST paths) with
the official ``kubernetes`` client, through the same Airflow connection users configure.

- ``KubeEmulator``: the emulator on a free loopback port, served from its own thread and
  event loop (so that synchronous clients can call it). ``connection_json()`` is an
  ``AIRFLOW_CONN_KUBERNETES_DEFAULT`` value whose ``kube_config`` extra points at it (no
  auth); ``core_v1()`` is a client of its own (not the global default configuration).
  ``GET .../pods/<name>/log`` is answered from ``logs`` (the emulator has no containers,
  so no logs of its own); ``tail_lines`` is honoured. ``fail(action, name, status, times)``
  makes the next ``times`` create/get/patch/delete requests for an object of that name
  (or ``list`` requests of that resource) answer ``status`` (a Kubernetes ``Status``
  body); the controller's own requests are never failed. kmock stores a change before
  any reaction answers: a failed create has still created the object (which is what a
  lost answer looks like to a client); a refused patch (400, 403, 404, 409, 422) is
  undone, as the API server changes nothing when it refuses. Declared kinds: pods,
  services, resourcequotas, deployments, replicasets, ingresses, HTTPRoutes (``RESOURCES``), and
  SelfSubjectAccessReviews, answered allowed unless ``forbidden`` holds (verb, resource). A change
  to a Deployment's spec bumps its ``metadata.generation`` in the same request. kmock
  keeps every version of an object and every request, and slows down with their number:
  only the newest two versions and the newest ``KEPT_REQUESTS`` changes are kept.
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

- ``DeploymentController`` (in ``kube_deployments``, importable from here too): the
  Deployment controller, ReplicaSets (revisions, ``maxSurge`` / ``maxUnavailable``,
  ``spec.paused``) and kubelet for Deployments (pods, readiness, crash loops, pull
  failures, stalls, status and conditions, ProgressDeadlineExceeded); see its docstring.
- ``KubeReleaseCluster``: a real registry holding checkout's test versions
  (``push_tiny_image``), the emulator, a ``DeploymentController`` and checkout's objects
  (``checkout_objects``: Deployment, Service, Ingress, HTTPRoute), with ``reset()``.

What the emulator does not do, and this module does not fake: label selectors (listing
returns every object of the namespace: clients and controllers filter themselves),
graceful deletion by itself (a pod without finalizers vanishes at once: hence the build
controller's finalizer), resourceVersion (so no 409 of its own: tests inject them), PUT
(a PUT is merged like a patch), strategic-merge patches (every patch is a JSON merge
patch: opsdag sends nothing else), and the pods' containers (hence the logs served from
``logs``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
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
        self.forbidden: set[tuple[str, str]] = set()  # (verb, resource) access reviews deny
        self._previous: dict[int, tuple[Any, Any]] = {}  # request id -> (object key, version before)
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
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # one line per request: too many
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            for key, kind in RESOURCES.items():
                emulator.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=True)
            emulator.resources[ACCESS_REVIEWS] = kmock.ResourceInfo(
                kind="SelfSubjectAccessReview", namespaced=False
            )
            emulator[kmock.action.CREATE] << self._review_access
            emulator[kmock.subresource("log")] << self._serve_log
            for action in (kmock.action.CREATE, kmock.action.UPDATE):
                emulator[action] << self._bookkeeping
            for action in (
                kmock.action.CREATE,
                kmock.action.FETCH,
                kmock.action.DELETE,
                kmock.action.UPDATE,
                kmock.action.LIST,
            ):
                emulator[action] << self._serve_fault
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            pruning = asyncio.create_task(self._prune_requests(emulator))
            await self._stop.wait()
            pruning.cancel()

    async def _prune_requests(self, emulator: kmock.KubernetesEmulator) -> None:
        # kmock keeps every request, and matches each new one against all those it kept: it
        # slows down with every request. Reads and the controller's own requests are
        # dropped from its log; the newest KEPT_REQUESTS changes are kept for assertions.
        while True:
            await asyncio.sleep(0.2)
            kept = [
                r
                for r in emulator._requests
                if r.action not in (kmock.action.FETCH, kmock.action.LIST, kmock.action.WATCH)
                and r.headers.get("User-Agent") != CONTROLLER_AGENT
            ]
            emulator._requests[:] = kept[-KEPT_REQUESTS:]

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

    def _review_access(self, request: kmock.Request) -> Any:
        # SelfSubjectAccessReview: allowed unless (verb, resource) is in ``forbidden``. Reviews
        # are not stored by an API server: kmock's copy is dropped (a second one would be a 409).
        if request.resource is None or request.resource.plural != "selfsubjectaccessreviews":
            raise NotImplementedError
        review = request.data or {}
        attributes = (review.get("spec") or {}).get("resourceAttributes") or {}
        denied = (attributes.get("verb"), attributes.get("resource")) in self.forbidden
        if self.emulator is not None:
            for key in [k for k in self.emulator.objects if k[0] == request.resource]:
                self.emulator.objects[key].delete()
        status = {"allowed": not denied}
        if denied:
            status["reason"] = "no RBAC rule allows it (test)"
        return kmock.Response(payload={**review, "status": status})

    def _bookkeeping(self, request: kmock.Request) -> Any:
        # kmock has already merged the request's body into the stored object. As the API server
        # does, a change to a Deployment's spec bumps metadata.generation in the same request.
        # kmock keeps every version of an object, and reads slow down with their number: only
        # the newest two are kept (a controller writing status 20 times a second makes many).
        resource = request.resource
        if resource is None or self.emulator is None:
            raise NotImplementedError
        body = request.data or {}
        name = request.name or (body.get("metadata") or {}).get("name")
        namespace = request.namespace or (body.get("metadata") or {}).get("namespace")
        key = (resource, namespace, name)
        if key not in self.emulator.objects:
            raise NotImplementedError
        stored = self.emulator.objects[key]
        if request.action == kmock.action.UPDATE and len(stored.history) >= 2:
            self._previous[id(request)] = (key, stored.history[-2])  # for a refused patch: undone
        if resource.plural == "deployments" and request.subresource is None and "spec" in body:
            generation = int((stored.get("metadata") or {}).get("generation") or 0)
            stored.patch({"metadata": {"generation": generation + 1}})
        if len(stored.history) > 2:
            del stored.history[:-2]
        raise NotImplementedError

    def fail(self, action: str, pod: str, status: int, times: int = 1) -> Fault:
        """Answer the next ``times`` ``action`` requests for the object ``pod`` with ``status``.

        ``action``: create, get, delete, patch, or list (then ``pod`` is the resource's
        plural, e.g. ``deployments``). Any resource's object of that name matches.
        """
        fault = Fault(action, pod, status, times)
        with self._faults_lock:
            self.faults.append(fault)
        return fault

    def _serve_fault(self, request: kmock.Request) -> Any:
        # Not ours: NotImplementedError passes the request on to the emulator. (Returning
        # NotImplemented would mean "depleted": kmock would disable this reaction for good.)
        previous = self._previous.pop(id(request), None)
        if request.subresource is not None or request.headers.get("User-Agent") == CONTROLLER_AGENT:
            raise NotImplementedError
        action = {
            kmock.action.CREATE: "create",
            kmock.action.FETCH: "get",
            kmock.action.DELETE: "delete",
            kmock.action.UPDATE: "patch",
            kmock.action.LIST: "list",
        }.get(request.action)
        name = request.name or ((request.data or {}).get("metadata") or {}).get("name")
        if action == "list":
            name = request.resource.plural if request.resource is not None else None
        with self._faults_lock:
            for fault in self.faults:
                if fault.left > 0 and (fault.action, fault.pod) == (action, name):
                    fault.left -= 1
                    fault.served += 1
                    break
            else:
                raise NotImplementedError
        if previous is not None and fault.status in REFUSALS and self.emulator is not None:
            # kmock has merged the body already; the API server changes nothing when it refuses.
            key, version = previous
            self.emulator.objects[key].history.append(version)
        reason = {
            403: "Forbidden",
            404: "NotFound",
            409: "Conflict",
            429: "TooManyRequests",
            500: "InternalError",
            503: "ServiceUnavailable",
        }
        return kmock.Response(
            status=fault.status,
            payload={
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": fault.status,
                "reason": reason.get(fault.status, "Unknown"),
                "message": f'{_plural(request)} "{name}": {fault.status} injected by the test',
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
KEPT_REQUESTS = 100
ACCESS_REVIEWS = "authorization.k8s.io/v1/selfsubjectaccessreviews"
REFUSALS = (400, 403, 404, 409, 422)  # answers after which the API server has changed nothing
# The kinds the emulator serves: what the build pods, the Deployment driver and its routers use.
RESOURCES = {
    "v1/pods": "Pod",
    "v1/services": "Service",
    "v1/resourcequotas": "ResourceQuota",
    "apps/v1/deployments": "Deployment",
    "apps/v1/replicasets": "ReplicaSet",
    "networking.k8s.io/v1/ingresses": "Ingress",
    "gateway.networking.k8s.io/v1/httproutes": "HTTPRoute",
}


def _plural(request: kmock.Request) -> str:
    return request.resource.plural if request.resource is not None and request.resource.plural else "pods"


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


# -- a service to release ----------------------------------------------------------------------


def checkout_objects(namespace: str, image: str, replicas: int) -> dict[str, dict[str, Any]]:
    """The stable Deployment, Service, Ingress and HTTPRoute of ``checkout`` as a team would apply them.

    The stable pods carry ``track: stable`` and the Service selects it, so the canary's
    pods (``track: canary``) are never behind the stable Service.
    """
    pod_labels = {"app": "checkout", "track": "stable"}
    return {
        "deployments": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "checkout", "namespace": namespace, "labels": {"app": "checkout"}},
            "spec": {
                "replicas": replicas,
                "progressDeadlineSeconds": 600,
                "selector": {"matchLabels": dict(pod_labels)},
                "template": {
                    "metadata": {"labels": dict(pod_labels)},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": image,
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                            }
                        ]
                    },
                },
            },
        },
        "services": {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "checkout", "namespace": namespace, "labels": {"app": "checkout"}},
            "spec": {
                "selector": dict(pod_labels),
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            },
        },
        "ingresses": {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "checkout", "namespace": namespace, "labels": {"app": "checkout"}},
            "spec": {
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["checkout.shop.example.com"], "secretName": "checkout-tls"}],
                "rules": [
                    {
                        "host": "checkout.shop.example.com",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "checkout", "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ],
            },
        },
        "httproutes": {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "checkout", "namespace": namespace},
            "spec": {
                "parentRefs": [{"name": "shop-gateway"}],
                "hostnames": ["checkout.shop.example.com"],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "backendRefs": [{"name": "checkout", "port": 80}],
                    }
                ],
            },
        },
    }


def push_tiny_image(registry: str, name: str, tag: str) -> str:
    """Push a config-only OCI image ``registry/name:tag`` (no layers) over the HTTP API; its digest."""
    import httpx

    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Labels": {"version": tag}}}
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    base = f"http://{registry}/v2/{name}"
    with httpx.Client(timeout=10) as http:
        started = http.post(f"{base}/blobs/uploads/")
        started.raise_for_status()
        location = started.headers["Location"]
        location = location if location.startswith("http") else f"http://{registry}{location}"
        upload = httpx.URL(location).copy_merge_params({"digest": config_digest})  # keeps its _state
        http.put(upload, content=config).raise_for_status()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [],
            }
        ).encode()
        answer = http.put(
            f"{base}/manifests/{tag}",
            content=manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        answer.raise_for_status()
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


# -- everything a Kubernetes release test needs, started once ----------------------------------


class KubeReleaseCluster:
    """A registry holding the test's versions, the emulator, the controller and ``checkout``.

    ``image(tag)`` is ``<registry>/shop/checkout:<tag>``; ``TAGS`` are pushed, ``9.9.9`` is
    not (the controller cannot pull it), ``1.4.0-crash`` crash-loops and ``1.5.0-stall``
    never gets ready. ``spec(router)`` is checkout's spec (include/services/checkout.yaml)
    with that router and this registry's repository. ``reset(tag, replicas)`` puts the
    namespace back to the stable Deployment alone with all the traffic, as seeded.
    """

    NAMESPACE = "shop"
    TAGS = ("1.0.0", "1.1.0", "1.2.0", "1.4.0-crash", "1.5.0-stall")

    def __init__(self, root: Any, replicas: int = 2) -> None:
        import contextlib

        from support.docker_engine import running_registry

        self.replicas = replicas
        self._stack = contextlib.ExitStack()
        self.registry = self._stack.enter_context(running_registry(root))
        self.kube = self._stack.enter_context(KubeEmulator(self.NAMESPACE))
        self.repository = f"{self.registry.host}/shop/checkout"
        for tag in self.TAGS:
            push_tiny_image(self.registry.host, "shop/checkout", tag)
        from support.kube_deployments import DeploymentController

        self.controller = DeploymentController(
            self.kube,
            namespace=self.NAMESPACE,
            interval=0.1,  # in the test's process: a busier loop slows every API answer down
            unpullable={self.image("9.9.9")},
            crashing={self.image("1.4.0-crash")},
            stalling={self.image("1.5.0-stall")},
        ).start()
        self._stack.callback(self.controller.stop)
        self.objects = checkout_objects(self.NAMESPACE, self.image("1.0.0"), replicas)
        self.api_client = self.kube.core_v1().api_client
        for resource, body in self.objects.items():
            self.call("POST", resource, body=body)

    def stop(self) -> None:
        self._stack.close()

    def clear_faults(self) -> None:
        """Undo what a test made go wrong: injected API faults, denied verbs, the controller's
        deadline, crash-looping Deployments and images made unpullable beyond the seeded one."""
        with self.kube._faults_lock:
            self.kube.faults.clear()
        self.kube.forbidden.clear()
        self.controller.progress_deadline = None
        self.controller.crashing_deployments.clear()
        self.controller.unpullable.intersection_update({self.image("9.9.9")})

    def image(self, tag: str) -> str:
        return f"{self.repository}:{tag}"

    def spec(self, router: dict[str, Any]) -> Any:
        from opsdag import paths
        from opsdag.spec.loader import read_yaml
        from opsdag.spec.service import ServiceSpec

        raw = read_yaml((paths.include_dir() / "services" / "checkout.yaml").read_text(encoding="utf-8"))
        raw["platform"]["router"] = router
        raw["image"]["repository"] = self.repository
        return ServiceSpec.model_validate(raw)

    def call(self, method: str, resource: str, name: str | None = None, body: Any = None) -> Any:
        """One request as the test (not the controller): the answer's JSON, None on 404."""
        groups = {
            "deployments": "/apis/apps/v1",
            "replicasets": "/apis/apps/v1",
            "httproutes": "/apis/gateway.networking.k8s.io/v1",
            "ingresses": "/apis/networking.k8s.io/v1",
        }
        path = f"{groups.get(resource, '/api/v1')}/namespaces/{self.NAMESPACE}/{resource}"
        content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
        try:
            response = self.api_client.call_api(
                path + (f"/{name}" if name else ""),
                method,
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                _preload_content=False,
                _return_http_data_only=True,
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return json.loads(response.data) if response.data else None

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        return self.call("GET", resource, name)

    def reset(self, tag: str = "1.0.0", replicas: int | None = None, timeout: float = 20) -> None:
        """Back to the seeded state: no canary objects, the route as seeded, stable ``tag`` ready."""
        replicas = self.replicas if replicas is None else replicas
        for resource in ("deployments", "ingresses", "services"):
            self.call("DELETE", resource, "checkout-canary")
        route = self.objects["httproutes"]
        self.call(
            "PATCH", "httproutes", "checkout", {"metadata": {"annotations": None}, "spec": route["spec"]}
        )
        stable = self.get("deployments", "checkout")
        assert stable is not None
        containers = stable["spec"]["template"]["spec"]["containers"]
        containers[0]["image"] = self.image(tag)
        seeded = self.objects["deployments"]["spec"]
        spec = {
            "replicas": replicas,
            "template": {"spec": {"containers": containers}},
            # what a rolling release in place may have left, and what its tests change
            "paused": None,
            "strategy": None,
            "progressDeadlineSeconds": seeded["progressDeadlineSeconds"],
        }
        meta = {"annotations": {"opsdag.io/rolling-from": None}}
        self.call("PATCH", "deployments", "checkout", {"metadata": meta, "spec": spec})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stable = self.get("deployments", "checkout") or {}
            status = stable.get("status") or {}
            pods = self.call("GET", "pods") or {}
            canary_pods = [
                p
                for p in pods.get("items") or []
                if (p["metadata"].get("labels") or {}).get("track") == "canary"
            ]
            if (
                status.get("observedGeneration") == stable["metadata"].get("generation")
                and status.get("replicas")
                == status.get("readyReplicas")
                == status.get("updatedReplicas")
                == replicas
                and not canary_pods
            ):
                return
            time.sleep(0.05)
        raise AssertionError(f"the namespace did not settle back to checkout:{tag} x {replicas}: {stable}")


def __getattr__(name: str) -> Any:
    # DeploymentController and OWNER moved to support.kube_deployments (which imports this module).
    if name in ("DeploymentController", "OWNER"):
        from support import kube_deployments

        return getattr(kube_deployments, name)
    raise AttributeError(name)
