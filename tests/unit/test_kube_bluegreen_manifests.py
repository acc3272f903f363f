"""The pure parts of blue-green on Kubernetes: the colours' objects, the selector switch, the spec.

Every object opsdag generates or changes for the colour layout is validated against the
Kubernetes schemas (``kubernetes-validate``, strict), as in test_kube_manifests.py: the new
colour's Deployment, and both Services after a selector patch.
"""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
from pydantic import ValidationError
from support.kube_bluegreen_objects import ROUTER, bluegreen_objects

from opsdag.platforms.kubernetes import manifests as mf
from opsdag.platforms.kubernetes import rbac
from opsdag.platforms.routers.service_selector import ServiceSelectorRouter
from opsdag.spec.loader import load_kind
from opsdag.spec.service import ServiceSpec
from opsdag.strategies.choice import StrategyRefused, choose_strategy

IMAGE = "registry.example.com/shop/checkout"
K8S = "1.33.0"
CHECKOUT = load_kind(Path(__file__).resolve().parents[2] / "include", "services").specs["checkout"]


def objects() -> dict[str, dict]:
    return bluegreen_objects("shop", f"{IMAGE}:1.0.0", 3)


def valid(obj: dict) -> None:
    assert kubernetes_validate.validate(obj, K8S, strict=True) == K8S.rsplit(".", 1)[0]


def merged(obj: dict, patch: dict) -> dict:
    """``patch`` applied as a JSON merge patch (RFC 7386), as the API server applies it."""
    out = copy.deepcopy(obj)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def test_the_seeded_objects_are_valid() -> None:
    for obj in objects().values():
        valid(obj)


def test_the_new_colour_is_the_stable_one_with_the_new_image_and_its_own_colour() -> None:
    blue = objects()["blue"]
    green = mf.colour_deployment(
        blue, base="checkout", colour="green", image=f"{IMAGE}:1.1.0", replicas=2, container="app"
    )
    valid(green)
    assert green["metadata"]["name"] == "checkout-green"
    assert green["metadata"]["labels"][mf.COLOUR_LABEL] == "green"
    assert green["spec"]["replicas"] == 2
    assert green["spec"]["selector"]["matchLabels"] == {
        "app": "checkout-bluegreen",
        mf.COLOUR_LABEL: "green",
    }
    labels = green["spec"]["template"]["metadata"]["labels"]
    assert labels == {"app": "checkout-bluegreen", mf.COLOUR_LABEL: "green", "version": "1.1.0"}
    (container,) = green["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{IMAGE}:1.1.0"
    assert container["readinessProbe"] == blue["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert mf.colour_of(green, "template") == "green" and mf.colour_of(blue, "template") == "blue"
    assert blue == objects()["blue"], "the stable colour is not touched"
    back = mf.colour_deployment(
        green, base="checkout", colour="blue", image=f"{IMAGE}:1.2.0", replicas=3, container=None
    )
    valid(back)
    assert back["spec"]["selector"]["matchLabels"][mf.COLOUR_LABEL] == "blue"


def test_the_switch_patches_the_colour_of_the_selector_only_guarded_by_its_version() -> None:
    active = objects()["active"]
    assert mf.selector_patch(active, "blue") is None  # already there: no call
    active["metadata"]["resourceVersion"] = "42"
    patch = mf.selector_patch(active, "green")
    assert patch == {"spec": {"selector": {mf.COLOUR_LABEL: "green"}}, "metadata": {"resourceVersion": "42"}}
    switched = merged(active, patch)
    valid(switched)
    assert switched["spec"]["selector"] == {"app": "checkout-bluegreen", mf.COLOUR_LABEL: "green"}
    assert switched["spec"]["ports"] == active["spec"]["ports"]
    assert mf.colour_of(switched, "selector") == "green"
    assert mf.colour_of(objects()["blue"], "selector") is None  # a Deployment's selector is not flat


def test_colours() -> None:
    assert (mf.other_colour("blue"), mf.other_colour("green")) == ("green", "blue")
    assert mf.colour_name("checkout", "green") == "checkout-green"


def test_the_router_spec_names_both_services() -> None:
    data = CHECKOUT.model_dump(mode="json")
    data["platform"]["router"] = dict(ROUTER)
    spec = ServiceSpec.model_validate(data)
    assert (spec.platform.router.active_service, spec.platform.router.preview_service) == (
        "checkout-active",
        "checkout-preview",
    )
    del data["platform"]["router"]["preview_service"]
    with pytest.raises(ValidationError, match="preview_service"):
        ServiceSpec.model_validate(data)
    data["platform"]["router"].update(preview_service="Checkout_Preview")
    with pytest.raises(ValidationError, match="preview_service"):
        ServiceSpec.model_validate(data)


def test_a_selector_switch_does_bluegreen_and_refuses_canary() -> None:
    data = CHECKOUT.model_dump(mode="json")
    data["bluegreen"] = {"pre_promotion_bake": "5m", "post_promotion_bake": "5m", "scale_down_delay": "10m"}
    spec = ServiceSpec.model_validate(data)
    router = {
        "router_kind": ServiceSelectorRouter.kind,
        "can_split": ServiceSelectorRouter.can_split,
        "can_preview": ServiceSelectorRouter.can_preview,
    }
    assert choose_strategy("bluegreen", spec, **router) == "bluegreen"
    with pytest.raises(StrategyRefused, match="canary needs a router that splits traffic by weight"):
        choose_strategy("canary", spec, **router)


def test_only_the_selector_router_asks_to_patch_services() -> None:
    assert "patch" in rbac.rules_for("service-selector")[("", "services")]
    for other in ("gateway-api", "nginx", None):
        assert "patch" not in rbac.rules_for(other)[("", "services")]
    assert rbac.covers("patch", "services")  # in the README's Role
