"""The Deployment controller, its ReplicaSets and the kubelet, played against kmock's emulator.

``DeploymentController`` does what kube-controller-manager and the kubelets would do to the
Deployments of one namespace, close enough for opsdag's driver to be tested on it: it
keeps a ReplicaSet per pod template, rolls from the old ones to the new one with
``maxSurge`` / ``maxUnavailable``, holds while ``spec.paused``, and moves pods along
(ready, crash loops, pull failures, stalls). See its docstring. Split out of
``kube_controller`` (the emulator, build pods and the release cluster stay there).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from support.kube_controller import CONTROLLER_AGENT, KubeEmulator, _now, _stamp

OWNER = "kube-controller.test/deployment"  # annotation: the Deployment a played pod or ReplicaSet belongs to
REVISION = "deployment.kubernetes.io/revision"
HASH = "pod-template-hash"


@dataclass
class _PodPlay:
    """What the controller remembers of one pod it created."""

    deployment: str
    container: str
    image: str
    born: float
    ip: str
    shown: str = ""  # the last state written: pending, ready, crash, pull, stalled
    crashes: bool = False  # made while its Deployment was in crashing_deployments


def template_hash(template: dict[str, Any]) -> str:
    """A stable ``pod-template-hash`` of a Deployment's pod template (the same template: the same hash)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return "".join(c for c in digest if c.isalpha())[:4] + digest[:6]


def rolling_numbers(spec: dict[str, Any], desired: int) -> tuple[int, int]:
    """``(maxSurge, maxUnavailable)`` as the controller resolves them (25 % each by default;
    percents: surge rounds up, unavailable down; never both 0)."""
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}

    def resolve(value: Any, up: bool) -> int:
        if isinstance(value, str) and value.endswith("%"):
            exact = desired * int(value[:-1]) / 100
            return math.ceil(exact) if up else math.floor(exact)
        return int(value)

    surge = resolve(rolling.get("maxSurge", "25%"), True)
    unavailable = resolve(rolling.get("maxUnavailable", "25%"), False)
    return surge, (1 if surge == 0 and unavailable == 0 else unavailable)


@dataclass
class DeploymentController:
    """Plays the Deployment controller, the ReplicaSet controller and the kubelet for ``namespace``.

    Every ``interval`` seconds, for each Deployment (one sync of each, as the controller):

    - a fresh one gets a uid; its pod template's hash (``pod-template-hash``) names its
      ReplicaSet ``<deployment>-<hash>`` (owner reference, the template plus the hash label,
      ``deployment.kubernetes.io/revision``). Unpaused, a template without a ReplicaSet gets
      one at the next revision; going back to an older template reuses its ReplicaSet and
      bumps its revision (``kubectl rollout undo``). The Deployment's revision annotation
      follows its newest ReplicaSet.
    - unpaused, it rolls as the controller does (``rolling_numbers``): the new ReplicaSet up
      to ``replicas + maxSurge`` pods in all, the old ones' unavailable pods removed first,
      then old ones down as far as ``replicas - maxUnavailable`` available pods allow; once
      the new one is complete the old ones go to 0. Paused, nothing rolls: only a lone
      ReplicaSet follows ``spec.replicas``.
    - each ReplicaSet's pods (``<replicaset>-<suffix>``) are created or deleted (not-ready
      ones first) to its replicas; a ReplicaSet whose Deployment is gone goes with its pods.

    A pod becomes ``Running`` and ``Ready`` (with a pod IP) ``start_seconds`` after it
    appears, unless its image is in ``unpullable`` (``ErrImagePull``, then
    ``ImagePullBackOff``), ``crashing`` (``CrashLoopBackOff``; so do new pods of the
    Deployments in ``crashing_deployments``) or ``stalling`` (running, never ready). The
    Deployment's status follows through its ``status`` subresource: ``observedGeneration``,
    ``replicas``, ``updatedReplicas`` (the new ReplicaSet's pods), ``readyReplicas``,
    ``availableReplicas`` and the ``Progressing`` / ``Available`` conditions; an unpaused
    rollout not complete ``progress_deadline`` seconds after its generation was first seen
    (default: the spec's ``progressDeadlineSeconds``) gets ``ProgressDeadlineExceeded``; a
    paused one is ``DeploymentPaused`` (no deadline, as in Kubernetes).
    """

    kube: KubeEmulator
    namespace: str = "default"
    interval: float = 0.05
    start_seconds: float = 0.1
    progress_deadline: float | None = None
    unpullable: set[str] = field(default_factory=set)
    crashing: set[str] = field(default_factory=set)
    stalling: set[str] = field(default_factory=set)
    crashing_deployments: set[str] = field(default_factory=set)  # whatever image their pods run
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        api_client = self.kube.core_v1(user_agent=CONTROLLER_AGENT).api_client
        self._core = client.CoreV1Api(api_client)
        self._apps = client.AppsV1Api(api_client)
        self._pods: dict[str, _PodPlay] = {}
        self._progress: dict[tuple[str, int], float] = {}  # (deployment, generation) -> first seen
        self._next_ip = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="deployment-controller", daemon=True)

    def start(self) -> DeploymentController:
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
                if error.status not in (404, 409):  # deleted or recreated between two calls
                    self.errors.append(repr(error))
            except Exception as error:  # keep playing; tests assert on errors
                self.errors.append(repr(error))
            self._stop.wait(self.interval)

    def _step(self) -> None:
        ns = self.namespace
        deployments = {
            d["metadata"]["name"]: d
            for d in self._list(f"/apis/apps/v1/namespaces/{ns}/deployments")
            if not d["metadata"].get("deletionTimestamp")
        }
        uids = {d["metadata"].get("uid") for d in deployments.values()}
        sets = [
            r
            for r in self._list(f"/apis/apps/v1/namespaces/{ns}/replicasets")
            if (r["metadata"].get("annotations") or {}).get(OWNER) is not None
        ]
        pods = [
            p
            for p in self._list(f"/api/v1/namespaces/{ns}/pods")
            if (p["metadata"].get("annotations") or {}).get(OWNER) is not None
        ]
        for rs in [r for r in sets if _owner_uid(r) not in uids]:
            self._apps.delete_namespaced_replica_set(rs["metadata"]["name"], ns)
            sets.remove(rs)
        names = {r["metadata"]["name"] for r in sets}
        for pod in pods:
            if pod["metadata"]["annotations"][OWNER] not in deployments or _set_of(pod) not in names:
                self._delete_pod(pod["metadata"]["name"])
        pods = [p for p in pods if _set_of(p) in names]
        for name, deployment in deployments.items():
            mine = [r for r in sets if r["metadata"]["annotations"][OWNER] == name]
            self._reconcile(
                name, deployment, mine, [p for p in pods if p["metadata"]["annotations"][OWNER] == name]
            )

    # -- one Deployment ------------------------------------------------------------------------

    def _reconcile(
        self, name: str, deployment: dict[str, Any], sets: list[dict[str, Any]], pods: list[dict[str, Any]]
    ) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        if not meta.get("uid"):
            meta = {**meta, "uid": str(uuid.uuid4())}
            patch = {"metadata": {"uid": meta["uid"], "creationTimestamp": _stamp(_now())}}
            self._apps.patch_namespaced_deployment(name, self.namespace, patch)
        template, paused = spec["template"], bool(spec.get("paused"))
        hashed = template_hash(template)
        desired = int(spec.get("replicas", 1))
        wanted = {r["metadata"]["name"]: int(r["spec"].get("replicas") or 0) for r in sets}
        by_set = {
            r["metadata"]["name"]: [p for p in pods if _set_of(p) == r["metadata"]["name"]] for r in sets
        }
        ready = {n: sum(1 for p in ps if self._play(p) == "ready") for n, ps in by_set.items()}
        new = next((r for r in sets if r["metadata"]["name"] == f"{name}-{hashed}"), None)
        top = max((_revision(r) for r in sets if r is not new), default=0)
        if new is None and not paused:
            new = self._create_set(name, meta["uid"], template, hashed, top + 1)
            sets.append(new)
            (
                wanted[new["metadata"]["name"]],
                by_set[new["metadata"]["name"]],
                ready[new["metadata"]["name"]],
            ) = 0, [], 0
        elif new is not None and _revision(new) <= top and not paused:
            new["metadata"]["annotations"][REVISION] = str(top + 1)
            self._apps.patch_namespaced_replica_set(
                new["metadata"]["name"],
                self.namespace,
                {"metadata": {"annotations": {REVISION: str(top + 1)}}},
            )
        if new is not None and (meta.get("annotations") or {}).get(REVISION) != str(_revision(new)):
            annotations = {REVISION: str(_revision(new))}
            self._apps.patch_namespaced_deployment(
                name, self.namespace, {"metadata": {"annotations": annotations}}
            )
        olds = [r["metadata"]["name"] for r in sorted(sets, key=_revision) if r is not new]
        if not paused and new is not None:
            self._roll(spec, desired, new["metadata"]["name"], olds, wanted, ready)
        elif paused:
            active = [n for n, count in wanted.items() if count > 0]
            if len(active) == 1 and wanted[active[0]] != desired:
                wanted[active[0]] = desired
        for rs in sets:
            rs_name = rs["metadata"]["name"]
            if int(rs["spec"].get("replicas") or 0) != wanted[rs_name]:
                self._apps.patch_namespaced_replica_set(
                    rs_name, self.namespace, {"spec": {"replicas": wanted[rs_name]}}
                )
            by_set[rs_name] = self._size(name, rs, by_set[rs_name], wanted[rs_name])
            self._set_status(rs, by_set[rs_name])
        new_pods = by_set[new["metadata"]["name"]] if new is not None else []
        old_pods = [p for n in olds for p in by_set[n]]
        self._deployment_status(name, deployment, desired, paused, hashed, new_pods, old_pods)

    def _roll(
        self,
        spec: dict[str, Any],
        desired: int,
        new: str,
        olds: list[str],
        wanted: dict[str, int],
        ready: dict[str, int],
    ) -> None:
        """One rolling-update sync: ``wanted`` (ReplicaSet -> replicas) changed in place."""
        if not any(wanted[n] for n in olds):
            wanted[new] = desired
            return
        surge, unavailable = rolling_numbers(spec, desired)
        total = sum(wanted.values())
        up = max(0, min(desired + surge - total, desired - wanted[new]))
        if up:  # a sync that scales the new ReplicaSet up does nothing else
            wanted[new] += up
            return
        if wanted[new] == desired and ready[new] >= desired:
            for n in olds:
                wanted[n] = 0
            return
        least = desired - unavailable
        room = sum(wanted.values()) - least - (wanted[new] - ready[new])
        for n in olds:  # unavailable old pods go first
            cut = min(max(0, room), max(0, wanted[n] - ready[n]))
            wanted[n] -= cut
            room -= cut
        room = sum(min(wanted[n], ready[n]) for n in wanted) - least
        for n in olds:
            cut = min(max(0, room), wanted[n])
            wanted[n] -= cut
            room -= cut

    def _size(self, deployment: str, rs: dict[str, Any], pods: list[dict[str, Any]], count: int) -> list:
        pods = sorted(pods, key=lambda p: (self._play(p) == "ready", p["metadata"]["name"]))
        while len(pods) > count:
            self._delete_pod(pods.pop(0)["metadata"]["name"])
        for _ in range(count - len(pods)):
            pods.append(self._create_pod(deployment, rs))
        return pods

    def _create_set(self, name: str, uid: str, template: dict[str, Any], hashed: str, revision: int) -> dict:
        labels = {**(template.get("metadata", {}).get("labels") or {}), HASH: hashed}
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name}-{hashed}",
                "namespace": self.namespace,
                "uid": str(uuid.uuid4()),
                "labels": labels,
                "annotations": {OWNER: name, REVISION: str(revision)},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": name,
                        "uid": uid,
                        "controller": True,
                    }
                ],
                "creationTimestamp": _stamp(_now()),
            },
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {**template, "metadata": {**template.get("metadata", {}), "labels": labels}},
            },
        }
        self._apps.create_namespaced_replica_set(self.namespace, body)
        return body

    def _set_status(self, rs: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        ready = sum(1 for p in pods if self._play(p) == "ready")
        status = {"replicas": len(pods), "readyReplicas": ready, "availableReplicas": ready}
        if {k: (rs.get("status") or {}).get(k) for k in status} != status:
            self._apps.patch_namespaced_replica_set_status(
                rs["metadata"]["name"], self.namespace, {"status": status}
            )

    def _deployment_status(
        self,
        name: str,
        deployment: dict[str, Any],
        desired: int,
        paused: bool,
        hashed: str,
        current: list[dict[str, Any]],
        old: list[dict[str, Any]],
    ) -> None:
        ready = [p for p in current if self._play(p) == "ready"]
        old_ready = [p for p in old if self._play(p) == "ready"]
        generation = int(deployment["metadata"].get("generation") or 1)
        first_seen = self._progress.setdefault((name, generation), time.monotonic())
        complete = len(ready) == desired == len(current) and not old
        deadline = self.progress_deadline
        if deadline is None:
            deadline = float(deployment["spec"].get("progressDeadlineSeconds", 600))
        replica_set = f'ReplicaSet "{name}-{hashed}"'
        if complete:
            progressing = ("True", "NewReplicaSetAvailable", f"{replica_set} has successfully progressed.")
        elif paused:
            progressing = ("Unknown", "DeploymentPaused", "Deployment is paused")
        elif time.monotonic() - first_seen > deadline:
            progressing = ("False", "ProgressDeadlineExceeded", f"{replica_set} has timed out progressing.")
        else:
            progressing = ("True", "ReplicaSetUpdated", f"{replica_set} is progressing.")
        available = len(ready) + len(old_ready)
        status = {
            "observedGeneration": generation,
            "replicas": len(current) + len(old),
            "updatedReplicas": len(current),
            "readyReplicas": available,
            "availableReplicas": available,
            "unavailableReplicas": max(0, desired - available),
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if available >= desired else "False",
                    "reason": "MinimumReplicasAvailable"
                    if available >= desired
                    else "MinimumReplicasUnavailable",
                },
                {
                    "type": "Progressing",
                    "status": progressing[0],
                    "reason": progressing[1],
                    "message": progressing[2],
                },
            ],
        }
        if {k: (deployment.get("status") or {}).get(k) for k in status} != status:
            self._apps.patch_namespaced_deployment_status(name, self.namespace, {"status": status})

    # -- pods ----------------------------------------------------------------------------------

    def _create_pod(self, deployment: str, rs: dict[str, Any]) -> dict[str, Any]:
        template = rs["spec"]["template"]
        name = f"{rs['metadata']['name']}-{uuid.uuid4().hex[:5]}"
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "uid": str(uuid.uuid4()),
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {OWNER: deployment},
                "creationTimestamp": _stamp(_now()),
            },
            "spec": template.get("spec", {}),
        }
        self._core.create_namespaced_pod(self.namespace, body)
        self._next_ip += 1
        first = template["spec"]["containers"][0]
        self._pods[name] = _PodPlay(
            deployment,
            first.get("name", "app"),
            first.get("image", ""),
            time.monotonic(),
            f"10.1.{self._next_ip // 250}.{self._next_ip % 250 + 1}",
            crashes=deployment in self.crashing_deployments,
        )
        self._write_pod_status(name, "Pending", False, {"waiting": {"reason": "ContainerCreating"}}, 0)
        return body

    def _play(self, pod: dict[str, Any]) -> str:
        """Move one pod along; its state now."""
        name = pod["metadata"]["name"]
        play = self._pods.get(name)
        if play is None:  # made by another controller's run: leave it as it is
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (pod.get("status") or {}).get("conditions") or []
            )
            return "ready" if ready else "unknown"
        age = time.monotonic() - play.born
        if age < self.start_seconds:
            return "pending"
        if play.image in self.unpullable:
            state = "pull" if age < 2 * self.start_seconds else "pullbackoff"
        elif play.image in self.crashing or play.crashes:
            state = "crash"
        elif play.image in self.stalling:
            state = "stalled"
        else:
            state = "ready"
        if state != play.shown:
            self._show(name, play, state)
        return state

    def _show(self, name: str, play: _PodPlay, state: str) -> None:
        image = play.image
        if state == "pull":
            waiting = {"reason": "ErrImagePull", "message": f'failed to pull image "{image}": not found'}
            self._write_pod_status(name, "Pending", False, {"waiting": waiting}, 0)
        elif state == "pullbackoff":
            waiting = {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
            self._write_pod_status(name, "Pending", False, {"waiting": waiting}, 0)
        elif state == "crash":
            waiting = {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}
            self._write_pod_status(name, "Running", False, {"waiting": waiting}, 3, play.ip)
        else:
            running = {"running": {"startedAt": _stamp(_now())}}
            self._write_pod_status(name, "Running", state == "ready", running, 0, play.ip)
        play.shown = state

    def _write_pod_status(
        self, name: str, phase: str, ready: bool, state: dict[str, Any], restarts: int, ip: str | None = None
    ) -> None:
        play = self._pods.get(name)
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {
                    "name": play.container if play else "app",
                    "image": play.image if play else "",
                    "imageID": "",
                    "ready": ready,
                    "restartCount": restarts,
                    "started": "running" in state,
                    "state": state,
                }
            ],
        }
        if ip:
            status["podIP"] = ip
        try:
            self._core.patch_namespaced_pod_status(name, self.namespace, {"status": status})
        except ApiException as error:
            if error.status != 404:
                raise

    def _delete_pod(self, name: str) -> None:
        self._pods.pop(name, None)
        try:
            self._core.delete_namespaced_pod(name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise

    def _list(self, path: str) -> list[dict[str, Any]]:
        response = self._core.api_client.call_api(
            path,
            "GET",
            header_params={"Accept": "application/json"},
            _preload_content=False,
            _return_http_data_only=True,
        )
        return json.loads(response.data).get("items") or []


def _revision(rs: dict[str, Any]) -> int:
    return int((rs["metadata"].get("annotations") or {}).get(REVISION) or 0)


def _owner_uid(rs: dict[str, Any]) -> str | None:
    owners = rs["metadata"].get("ownerReferences") or []
    return owners[0].get("uid") if owners else None


def _set_of(pod: dict[str, Any]) -> str:
    """The ReplicaSet of a played pod: ``<deployment>-<hash>``."""
    labels = pod["metadata"].get("labels") or {}
    return f"{pod['metadata']['annotations'][OWNER]}-{labels.get(HASH, '')}"
