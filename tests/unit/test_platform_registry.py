"""Choosing a service's workload driver and traffic router from its spec, and what an unknown kind says."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsdag.platforms import registry
from opsdag.platforms.base import TrafficRouter, WorkloadDriver
from opsdag.platforms.registry import NoDriver, NoRouter, driver_for, router_class, router_for
from opsdag.platforms.routers.haproxy import HaproxyRouter
from opsdag.platforms.sandbox import SandboxDriver
from opsdag.spec.loader import read_yaml
from opsdag.spec.service import ServiceSpec

SERVICES = Path(__file__).resolve().parents[2] / "include" / "services"


def spec(name: str) -> ServiceSpec:
    return ServiceSpec.model_validate(read_yaml((SERVICES / f"{name}.yaml").read_text(encoding="utf-8")))


@pytest.fixture
def tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's tables as they are, restored after a test that registers something."""
    monkeypatch.setattr(registry, "DRIVERS", dict(registry.DRIVERS))
    monkeypatch.setattr(registry, "ROUTERS", dict(registry.ROUTERS))


def test_the_sandbox_service_gets_the_sandbox_driver_and_haproxy_router() -> None:
    demo = spec("demo-api")
    driver, router = driver_for(demo), router_for(demo)
    assert type(driver) is SandboxDriver and driver.service_name == "demo-api"
    assert type(router) is HaproxyRouter and router.service_name == "demo-api"
    assert router.preview_share == demo.bluegreen.preview_share
    assert router_class(demo) is HaproxyRouter and router_class(demo).can_preview


def test_the_json_form_a_trigger_receives_chooses_the_same() -> None:
    data = spec("demo-api").model_dump(mode="json")
    assert type(driver_for(data)) is SandboxDriver
    assert type(router_for(data)) is HaproxyRouter


def test_a_router_kind_without_a_router_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    from opsdag.platforms.kubernetes.driver import KubernetesDriver
    from opsdag.platforms.registry import ROUTERS

    monkeypatch.delitem(ROUTERS, "replica-ratio")  # a version of opsdag without it

    checkout = spec("checkout")
    assert type(driver_for(checkout)) is KubernetesDriver
    data = checkout.model_dump(mode="json")
    data["platform"]["router"] = {"kind": "replica-ratio"}
    with pytest.raises(
        NoRouter, match=r"^platform\.router\.kind: 'replica-ratio' has no traffic router in this version"
    ):
        router_for(data)
    with pytest.raises(NoRouter, match=r"^platform\.router\.kind: 'replica-ratio'"):
        router_class(data)


class _Driver(SandboxDriver):
    kind = "elsewhere"


class _Router(HaproxyRouter):
    kind = "elsewhere"
    can_split = False


def test_registered_kinds_are_imported_on_first_use(tables: None) -> None:
    registry.register_driver("kubernetes", f"{__name__}:_Driver")
    registry.register_router("nginx", f"{__name__}:_Router")
    checkout = spec("checkout")
    driver, router = driver_for(checkout), router_for(checkout)
    assert (
        type(driver) is _Driver and isinstance(driver, WorkloadDriver) and driver.service_name == "checkout"
    )
    assert type(router) is _Router and isinstance(router, TrafficRouter) and not router.can_split


def test_a_registered_path_that_cannot_be_imported_names_the_field(tables: None) -> None:
    registry.register_driver("kubernetes", "opsdag.platforms.nowhere:KubernetesDriver")
    with pytest.raises(
        NoDriver, match=r"^platform\.kind: 'kubernetes' is registered as opsdag\.platforms\.nowhere"
    ):
        driver_for(spec("checkout"))
    registry.register_router("nginx", "opsdag.platforms.sandbox:NoSuchRouter")
    with pytest.raises(NoDriver, match=r"^platform\.router\.kind: 'nginx' is registered as .*NoSuchRouter"):
        router_for(spec("checkout"))


@pytest.mark.parametrize(
    "path", ["opsdag.platforms.sandbox.SandboxDriver", ":SandboxDriver", "opsdag:", "a:b.c"]
)
def test_registering_needs_a_module_colon_class_path(tables: None, path: str) -> None:
    with pytest.raises(ValueError, match=r"is not an import path like 'package\.module:ClassName'"):
        registry.register_driver("x", path)
    with pytest.raises(ValueError, match="is not an import path"):
        registry.register_router("x", path)


def test_parsing_a_dag_imports_no_driver() -> None:
    """The tables are import paths: choosing happens at run time, not when the registry is imported."""
    assert all(
        isinstance(path, str) and ":" in path for path in {**registry.DRIVERS, **registry.ROUTERS}.values()
    )
