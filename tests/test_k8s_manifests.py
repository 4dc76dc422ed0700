"""deploy/k8s validates offline: every manifest against the Kubernetes schemas
(kubernetes-validate), the kustomize build of the base and the example overlay when kubectl is
installed, and the settings that must agree across files."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"
KUBECTL = shutil.which("kubectl")

kubernetes_validate = pytest.importorskip("kubernetes_validate")


def _documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def _validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates(path: Path) -> None:
    docs = _documents(path.read_text())
    assert docs
    for doc in docs:
        _validate(doc)


def _kustomize_major() -> int:
    """Major version of kubectl's built-in kustomize (0 when unknown)."""
    result = subprocess.run(
        [KUBECTL, "version", "--client", "-o", "json"],
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    match = re.search(r'"kustomizeVersion":\s*"v(\d+)', result.stdout)
    return int(match.group(1)) if match else 0


def _build(folder: Path) -> list[dict]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (Debian's kubernetes-client)")
    if _kustomize_major() < 4:  # Debian 12's kubectl 1.20 embeds kustomize 2
        pytest.skip("kubectl's kustomize is older than v4 (labels, replicas, patches)")
    result = subprocess.run(
        [KUBECTL, "kustomize", str(folder)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return _documents(result.stdout)


@pytest.mark.parametrize("folder", ["base", "overlays/example"])
def test_kustomize_build_validates(folder: str) -> None:
    docs = _build(K8S / folder)
    kinds = {doc["kind"] for doc in docs}
    assert {"StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"} <= kinds
    assert "Deployment" in kinds  # the gateway
    for doc in docs:
        _validate(doc)
    if folder == "overlays/example":
        assert "HorizontalPodAutoscaler" in kinds


def test_settings_agree_across_files() -> None:
    docs = _build(K8S / "base")
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    workload = by_kind[("StatefulSet", "sam2-stream")]
    pod = workload["spec"]["template"]
    settings = next(d for (k, n), d in by_kind.items() if k == "ConfigMap" and "settings" in n)
    grace = float(settings["data"]["SAM2_STREAM_DRAIN_GRACE_SECONDS"])
    assert pod["spec"]["terminationGracePeriodSeconds"] >= grace + 10
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"readinessProbe", "livenessProbe"} <= set(container)
    assert "/readyz" in " ".join(container["readinessProbe"]["exec"]["command"])
    env = {e["name"]: e for e in container["env"]}
    assert env["SAM2_STREAM_INSTANCE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["SAM2_STREAM_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "sam2-stream-auth"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    # The StatefulSet's governing Service publishes not-ready (draining) pods: the gateway
    # routes a draining pod's sessions by pod DNS name.
    governing = by_kind[("Service", workload["spec"]["serviceName"])]
    assert governing["spec"]["publishNotReadyAddresses"] is True
    gateway = next(d for (k, n), d in by_kind.items() if k == "ConfigMap" and "gateway" in n)
    assert (
        f".{governing['metadata']['name']}.sam2.svc"
        in gateway["data"]["sam2-stream-instances.conf"]
    )


def test_gateway_routes_are_the_shipped_routes() -> None:
    shipped = (ROOT / "deploy/nginx/sam2-stream-routes.conf").read_text()
    assert (K8S / "base/gateway/sam2-stream-routes.conf").read_text() == shipped
