"""The scale-out files are valid: raw manifests against real Kubernetes schemas, the work-pool
template against a real Prefect API (which builds a Job from it)."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate

FOLDER = Path(__file__).resolve().parent.parent / "deployments" / "kubernetes"
K8S_VERSION = "1.31.0"


def test_runner_rbac_is_valid_for_the_real_schemas() -> None:
    documents = list(yaml.safe_load_all((FOLDER / "runner-rbac.yaml").read_text()))
    assert [d["kind"] for d in documents] == ["ServiceAccount", "Role", "RoleBinding"]
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_work_pool_job_template_renders_a_valid_job() -> None:
    template = json.loads((FOLDER / "work-pool-kubernetes.json").read_text())
    job = json.loads(json.dumps(template["job_configuration"]["job_manifest"]))
    filled = {
        "{{ name }}-": "backup-mysql-",
        "{{ namespace }}": "vibeops",
        "{{ image }}": "gcr.io/vibebench/vibeops:1.0.0",
        "{{ cpu_request }}": "1",
        "{{ memory_request }}": "1Gi",
    }
    text = json.dumps(job)
    for placeholder, value in filled.items():
        text = text.replace(json.dumps(placeholder), json.dumps(value))
    text = text.replace('"{{ finished_job_ttl }}"', "3600")
    text = text.replace('"{{ command }}"', '["prefect", "flow-run", "execute"]')
    text = text.replace('"{{ env }}"', '[{"name": "PREFECT_API_URL", "value": "http://x/api"}]')
    rendered = json.loads(text)
    assert "{{" not in json.dumps(rendered)
    kubernetes_validate.validate(rendered, K8S_VERSION, strict=True)


def test_prefect_accepts_the_kubernetes_work_pool_template() -> None:
    template = json.loads((FOLDER / "work-pool-kubernetes.json").read_text())
    with get_client(sync_client=True) as client:
        pool = client.create_work_pool(
            WorkPoolCreate(name="vibeops-k8s-test", type="kubernetes", base_job_template=template),
            overwrite=True,
        )
    assert pool.base_job_template["variables"]["properties"]["image"]["default"].startswith(
        "gcr.io/"
    )
