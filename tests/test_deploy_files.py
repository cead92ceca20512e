"""Static checks of the deployment files: deploy/, the root Dockerfile and .dockerignore.

No Docker engine or Kubernetes cluster runs here or in CI, so these tests read the files
and hold them to the code: every file parses, every image is pinned, every environment
variable our services get is one the code reads (or is allow-listed below with a
reason), no secret is written literally, every port agrees with the code's defaults,
and every command starts a module that exists. The checker functions are unit-tested
on small bad inputs at the end, so a check that stopped working would be noticed.

Three optional checks run only where their tool is installed: `kubectl kustomize`
(renders deploy/temporal/k8s), `docker-compose config` (compose-file schema) and the
`kubernetes-validate` package (strict Kubernetes API schemas). docs/deploy.md says
which ran. None of these tests uses the stack fixtures of tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.settings import Settings
from llm_simulator.settings import SimulatorSettings
from ui.settings import UISettings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
TEMPORAL_DIR = DEPLOY / "temporal"
COMPOSE_FILE = TEMPORAL_DIR / "docker-compose.yml"
ENV_EXAMPLE = TEMPORAL_DIR / ".env.example"
K8S_DIR = TEMPORAL_DIR / "k8s"
HELM_VALUES = TEMPORAL_DIR / "helm" / "temporal-values.yaml"
DYNAMIC_CONFIG = TEMPORAL_DIR / "dynamicconfig" / "production.yaml"
SETUP_SCRIPT = TEMPORAL_DIR / "scripts" / "temporal-setup.sh"
SETUP_JOB = K8S_DIR / "temporal-setup-job.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

OUR_IMAGE = "durable-chat"  # built from the root Dockerfile

# Ports that come from the code (class defaults, not this machine's environment).
GATEWAY_PORT = Settings.model_fields["gateway_port"].default  # 8000
UI_PORT = UISettings.model_fields["ui_port"].default  # 8501
TEMPORAL_PORT = int(Settings.model_fields["temporal_address"].default.rsplit(":", 1)[1])  # 7233
SIMULATOR_PORT = SimulatorSettings.model_fields["port"].default  # 8300
# Documented constants (docs/deploy.md), not in our code:
TEMPORAL_UI_CONTAINER_PORT = 8080  # temporalio/ui listens on TEMPORAL_UI_PORT, default 8080
WORKER_METRICS_PORT = 9464  # WORKER_METRICS_PORT default, added by the metrics change

# The custom search attributes durable-chat's workflows upsert.
SEARCH_ATTRIBUTES = {
    "ChatConversationId": "Keyword",
    "ChatUserId": "Keyword",
    "ChatStage": "Keyword",
    "ChatCacheHit": "Bool",
}

# Environment variables our containers may get besides the settings classes' fields.
ALLOWED_EXTRA_ENV: dict[str, str] = {
    "LOG_LEVEL": "read by common/log.py, not a Settings field",
    "LOG_FORMAT": "read by common/log.py (json | console), not a Settings field",
    "WORKER_METRICS_PORT": "worker Prometheus port, added by the metrics change",
    "API_KEYS": "gateway API keys (a secret), added by the API-keys change",
    "PATH": "the image puts its virtualenv first (Dockerfile)",
    "PYTHONUNBUFFERED": "Python's own: unbuffered logs (Dockerfile)",
    "PYTHONDONTWRITEBYTECODE": "Python's own: no .pyc on a read-only root filesystem",
}


def allowed_env_names() -> set[str]:
    """Every name the code reads, plus the documented allow-list."""
    names = {name.upper() for name in Settings.model_fields}  # common/settings.py
    names |= {name.upper() for name in UISettings.model_fields}  # ui/settings.py
    names |= {f"SIM_{name.upper()}" for name in SimulatorSettings.model_fields}  # llm_simulator
    return names | set(ALLOWED_EXTRA_ENV)


# ------------------------------------------------------------------ checkers ------

_SENSITIVE = re.compile(r"(^|_)(PASSWORD|PASSWD|PWD|SECRET|TOKEN|KEY|KEYS)$")
# Keys whose value names another object (a Secret, a key inside it), never a secret itself.
_STRUCTURAL_KEYS = {"key", "name", "secretKey", "existingSecret", "secretName"}
_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*|:-)?\}")
_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:([^@\s/]+)@")
_SUBSTITUTION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def normalised(key: str) -> str:
    """`existingSecret` -> `EXISTING_SECRET`, `ui_password` -> `UI_PASSWORD`."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).upper()


def is_sensitive(key: str) -> bool:
    return key not in _STRUCTURAL_KEYS and bool(_SENSITIVE.search(normalised(key)))


def is_reference(value: str) -> bool:
    """A compose substitution with no literal fallback: `${X}`, `${X:?msg}`, `${X:-}`."""
    return bool(_REFERENCE.fullmatch(value))


def literal_secrets(node: Any, path: str = "") -> list[str]:
    """Paths of literal secret values in a parsed YAML tree.

    A secret-named key (…PASSWORD, …SECRET, …KEY, …TOKEN) must hold a reference or
    nothing; a Kubernetes env entry with a secret name must use valueFrom; a URL must
    not carry a literal password.
    """
    found: list[str] = []
    if isinstance(node, dict):
        name = node.get("name")
        if isinstance(name, str) and is_sensitive(name) and node.get("value") not in (None, ""):
            found.append(f"{path}[name={name}].value")
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(value, str):
                if is_sensitive(str(key)) and value and not is_reference(value):
                    found.append(where)
                found += [f"{where} (URL password)" for _ in _url_passwords(value)]
            else:
                found += literal_secrets(value, where)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, str):
                key, _, value = item.partition("=")
                if value and is_sensitive(key) and not is_reference(value):
                    found.append(f"{path}[{index}]")
                found += [f"{path}[{index}] (URL password)" for _ in _url_passwords(item)]
            else:
                found += literal_secrets(item, f"{path}[{index}]")
    return found


def _url_passwords(text: str) -> list[str]:
    return [p for p in _URL_PASSWORD.findall(text) if not is_reference(p)]


def image_refs(node: Any) -> list[str]:
    """Every image a parsed YAML tree names: `image: repo:tag` or Helm's {repository, tag}."""
    refs: list[str] = []
    if isinstance(node, dict):
        if isinstance(node.get("repository"), str) and "tag" in node:
            refs.append(f"{node['repository']}:{node['tag']}")
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                refs.append(value)
            else:
                refs += image_refs(value)
    elif isinstance(node, list):
        for item in node:
            refs += image_refs(item)
    return refs


def is_pinned(ref: str) -> bool:
    """`repo:tag` with a real tag (not latest, not a variable) or a digest."""
    if "@sha256:" in ref:
        return True
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:  # no tag at all (the colon was a registry port)
        return False
    return bool(tag) and tag != "latest" and "$" not in tag


def unknown_env(names: set[str], allowed: set[str]) -> list[str]:
    return sorted(names - allowed)


def compose_env_names(service: dict[str, Any]) -> set[str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {item.split("=", 1)[0] for item in env}
    return set(env)


def k8s_env_names(container: dict[str, Any], configmaps: dict[str, dict[str, str]]) -> set[str]:
    names = {item["name"] for item in container.get("env", [])}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            names |= set(configmaps[ref["name"]])
    return names


def missing_command_targets(argv: list[str]) -> list[str]:
    """What a container command starts that does not exist in the repository."""
    missing: list[str] = []
    if argv[:2] == ["python", "-m"]:
        module = argv[2]
        path = ROOT / module.replace(".", "/")
        if not ((path / "__main__.py").exists() or path.with_suffix(".py").exists()):
            missing.append(module)
    elif argv and argv[0] == "python" and len(argv) > 1 and argv[1].endswith(".py"):
        if not (ROOT / argv[1]).exists():
            missing.append(argv[1])
    elif argv[:2] == ["chainlit", "run"]:
        if not (ROOT / argv[2]).exists():
            missing.append(argv[2])
    else:
        missing.append(" ".join(argv))
    return missing


def role_of(argv: list[str]) -> str:
    """gateway | worker | ui | simulator | migrate, from a container command."""
    joined = " ".join(argv)
    for marker, role in (
        ("-m storage.migrate", "migrate"),
        ("-m api", "gateway"),
        ("worker.py", "worker"),
        ("-m ui", "ui"),
        ("ui/app.py", "ui"),
        ("-m llm_simulator", "simulator"),
    ):
        if marker in joined:
            return role
    raise AssertionError(f"unknown role for command {argv}")


# Ports each role must use (container side), from the code.
ROLE_PORTS = {
    "gateway": {"GATEWAY_PORT": GATEWAY_PORT},
    "ui": {"UI_PORT": UI_PORT},
    "simulator": {"SIM_PORT": SIMULATOR_PORT},
    "worker": {"WORKER_METRICS_PORT": WORKER_METRICS_PORT},
    "migrate": {},
}


def port_mismatches(role: str, env: dict[str, Any], container_ports: set[int]) -> list[str]:
    """Port variables and exposed ports of a role that disagree with the code."""
    problems = []
    for variable, expected in ROLE_PORTS[role].items():
        if variable in env and int(env[variable]) != expected:
            problems.append(f"{variable}={env[variable]} (code: {expected})")
        if container_ports and expected not in container_ports:
            problems.append(f"{role} exposes {sorted(container_ports)}, not {expected}")
    return problems


# ------------------------------------------------------------------ loading -------


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml"})


def load_documents(path: Path) -> list[Any]:
    text = path.read_text()
    if path.suffix == ".json":
        return [json.loads(text)]
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def compose() -> dict[str, Any]:
    (doc,) = load_documents(COMPOSE_FILE)
    return doc  # type: ignore[no-any-return]


def our_compose_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if str(service.get("image", "")).split(":")[0] == OUR_IMAGE or "build" in service
    }


def kustomization() -> dict[str, Any]:
    (doc,) = load_documents(K8S_DIR / "kustomization.yaml")
    return doc  # type: ignore[no-any-return]


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += load_documents(path)
    return docs


def k8s_configmaps() -> dict[str, dict[str, str]]:
    return {
        d["metadata"]["name"]: d.get("data", {})
        for d in k8s_documents()
        if d["kind"] == "ConfigMap"
    }


def pod_specs() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in k8s_documents():
        if doc["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
            yield doc, doc["spec"]["template"]["spec"]


def our_k8s_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (doc, c)
        for doc, spec in pod_specs()
        for c in spec["containers"]
        if c["image"].split(":")[0] == OUR_IMAGE
    ]


def kustomize_image(ref: str) -> str:
    """The image reference after kustomization.yaml's `images:` override."""
    for override in kustomization().get("images", []):
        if ref.split(":")[0] == override["name"]:
            return f"{override.get('newName', override['name'])}:{override['newTag']}"
    return ref


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comment lines dropped."""
    lines = [
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            result.append((instruction.upper(), args.strip()))
    return result


def dockerfile_runtime_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    return instructions[last_from:]


def pyproject_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def string_values(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from string_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from string_values(item)
    elif isinstance(node, str):
        yield node


# ------------------------------------------------------------------ files ---------


def test_every_yaml_and_json_file_under_deploy_parses() -> None:
    files = yaml_files() + sorted(DEPLOY.rglob("*.json"))
    assert len(files) >= 8, files
    for path in files:
        docs = load_documents(path)
        assert docs, f"{path} has no document"
        assert all(isinstance(doc, dict) for doc in docs), path


def test_kustomization_lists_existing_files_and_every_manifest_is_listed() -> None:
    resources = kustomization()["resources"]
    assert all((K8S_DIR / r).exists() for r in resources), resources
    top_level = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(resources) == top_level  # optional/ holds the only unlisted manifests


def test_k8s_manifests_have_the_basic_fields_and_consistent_references() -> None:
    docs = k8s_documents()
    assert all({"apiVersion", "kind", "metadata"} <= set(d) for d in docs)
    configmaps = k8s_configmaps()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for doc, spec in pod_specs():
        labels = doc["spec"]["template"]["metadata"].get("labels", {})
        if doc["kind"] == "Deployment":
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for container in spec["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["name"] == "durable-chat-secrets"
                if "configMapKeyRef" in ref:
                    cm = ref["configMapKeyRef"]
                    assert cm["key"] in configmaps[cm["name"]]
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps
    for doc in docs:
        if doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
            assert any(
                selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
                for d in deployments.values()
            ), doc["metadata"]["name"]
        if doc["kind"] in {"HorizontalPodAutoscaler", "ScaledObject"}:
            assert doc["spec"]["scaleTargetRef"]["name"] in deployments


def test_compose_dependencies_exist_and_one_shot_jobs_gate_the_apps() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
    for name in ("gateway", "worker"):
        depends = services[name]["depends_on"]
        assert depends["temporal-setup"]["condition"] == "service_completed_successfully"
    assert services["temporal"]["depends_on"]["temporal-schema"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["worker"]["deploy"]["replicas"]  # scalable: no container_name, replicas
    assert not any("container_name" in s for s in services.values())


# ------------------------------------------------------------------ images --------


def test_every_image_is_pinned() -> None:
    refs = image_refs(compose()) + image_refs(load_documents(HELM_VALUES))
    refs += [kustomize_image(r) for r in image_refs(k8s_documents())]
    args = dict(
        a.split("=", 1) for ins, a in dockerfile_instructions() if ins == "ARG" and "=" in a
    )
    for ins, a in dockerfile_instructions():
        if ins == "FROM":
            refs.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], a.split()[0]))
    assert len(refs) >= 10
    assert [r for r in refs if not is_pinned(r)] == []


def test_official_images_are_the_expected_ones() -> None:
    refs = set(image_refs(compose()))
    repos = {r.rsplit(":", 1)[0] for r in refs}
    assert {"temporalio/server", "temporalio/admin-tools", "temporalio/ui", "postgres"} <= repos
    # One server version everywhere: compose, the Helm values and the setup Job.
    versions = {
        r.rsplit(":", 1)[1]
        for r in image_refs(compose())
        + image_refs(load_documents(HELM_VALUES))
        + image_refs(k8s_documents())
        if r.startswith(("temporalio/server:", "temporalio/admin-tools:"))
    }
    assert len(versions) == 1, versions


def test_our_image_tag_is_the_pyproject_version() -> None:
    version = pyproject_version()
    for name, service in our_compose_services().items():
        assert service["image"] == f"{OUR_IMAGE}:{version}", name
    assert kustomize_image(OUR_IMAGE) == f"{OUR_IMAGE}:{version}"
    assert our_k8s_containers()


# ------------------------------------------------------------------ environment ---


def test_compose_services_of_ours_get_only_known_variables() -> None:
    allowed = allowed_env_names()
    services = our_compose_services()
    assert set(services) >= {"gateway", "worker", "ui", "llm-simulator"}
    for name, service in services.items():
        assert unknown_env(compose_env_names(service), allowed) == [], name


def test_k8s_containers_of_ours_get_only_known_variables() -> None:
    allowed = allowed_env_names()
    configmaps = k8s_configmaps()
    containers = our_k8s_containers()
    roles = {role_of(c["command"]) for _, c in containers}
    assert roles == {"gateway", "worker", "ui", "migrate"}
    for doc, container in containers:
        names = k8s_env_names(container, configmaps)
        assert unknown_env(names, allowed) == [], doc["metadata"]["name"]


def test_dockerfile_runtime_environment_is_known() -> None:
    names: set[str] = set()
    for ins, args in dockerfile_runtime_stage():
        if ins == "ENV":
            names |= {token.split("=", 1)[0] for token in shlex.split(args)}
    assert {"GATEWAY_HOST", "UI_HOST"} <= names
    assert unknown_env(names, allowed_env_names()) == []


def test_compose_substitutions_are_all_in_env_example() -> None:
    used = {m for value in string_values(compose()) for m in _SUBSTITUTION.findall(value)}
    documented = set(env_example())
    assert used <= documented, used - documented
    assert documented <= used, documented - used  # no stale entries either


def test_required_secrets_fail_fast_when_missing() -> None:
    required = {"TEMPORAL_POSTGRES_PASSWORD", "APP_POSTGRES_PASSWORD", "CHAINLIT_AUTH_SECRET"}
    required.add("UI_PASSWORD")
    values = list(string_values(compose()))
    for name in required:
        uses = [v for v in values if f"${{{name}" in v]
        assert uses and all(f"${{{name}:?" in v for v in uses), name


# ------------------------------------------------------------------ secrets -------


def test_no_literal_secret_in_any_deployment_file() -> None:
    for path in yaml_files():
        for doc in load_documents(path):
            assert literal_secrets(doc) == [], path


def test_env_example_leaves_every_secret_empty() -> None:
    values = env_example()
    secrets = {k for k in values if is_sensitive(k)}
    assert secrets >= {"TEMPORAL_POSTGRES_PASSWORD", "UI_PASSWORD", "OPENAI_API_KEY", "API_KEYS"}
    assert {k: values[k] for k in secrets if values[k]} == {}


def test_no_secret_object_with_data_is_shipped() -> None:
    assert [d for d in k8s_documents() if d["kind"] == "Secret"] == []


def test_dockerignore_keeps_env_files_out_and_packaging_files_in() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", "**/.env", ".venv", ".git"} <= patterns
    # `pip install .` needs these (pyproject's readme is README.md).
    assert not patterns & {"README.md", "*.md", "pyproject.toml", "ui", "api", "worker.py"}


# ------------------------------------------------------------------ ports ---------


def test_compose_ports_agree_with_the_code() -> None:
    services = compose()["services"]
    for name, service in our_compose_services().items():
        env = service.get("environment", {})
        published = {int(str(p).rsplit(":", 1)[1]) for p in service.get("ports", [])}
        exposed = {int(p) for p in service.get("expose", [])}
        assert port_mismatches(role_of(service["command"]), env, published | exposed) == [], name
    assert services["gateway"]["ports"] == ["8000:8000"]
    assert services["ui"]["ports"] == [f"{UI_PORT}:{UI_PORT}"]
    assert services["ui"]["environment"]["GATEWAY_URL"] == f"http://gateway:{GATEWAY_PORT}"
    assert services["worker"]["environment"]["SIMULATOR_URL"] == (
        f"http://llm-simulator:{SIMULATOR_PORT}/v1"
    )
    for service in our_compose_services().values():
        address = service.get("environment", {}).get("TEMPORAL_ADDRESS")
        if address:
            assert address == f"temporal:{TEMPORAL_PORT}"
    assert services["temporal"]["ports"] == [f"127.0.0.1:{TEMPORAL_PORT}:{TEMPORAL_PORT}"]
    ui = services["temporal-ui"]
    assert ui["ports"] == [f"127.0.0.1:{TEMPORAL_UI_CONTAINER_PORT}:{TEMPORAL_UI_CONTAINER_PORT}"]
    assert int(ui["environment"]["TEMPORAL_UI_PORT"]) == TEMPORAL_UI_CONTAINER_PORT
    assert env_example()["TEMPORAL_UI_URL"] == f"http://localhost:{TEMPORAL_UI_CONTAINER_PORT}"


def test_k8s_ports_and_probes_agree_with_the_code() -> None:
    configmaps = k8s_configmaps()
    config = configmaps["durable-chat-config"]
    assert config["TEMPORAL_ADDRESS"].endswith(f":{TEMPORAL_PORT}")
    assert config["GATEWAY_URL"].endswith(f":{GATEWAY_PORT}")
    gateway_routes = (ROOT / "api" / "routes" / "health.py").read_text()
    for doc, container in our_k8s_containers():
        role = role_of(container["command"])
        env = {i["name"]: i["value"] for i in container.get("env", []) if "value" in i}
        ports = {p["containerPort"] for p in container.get("ports", [])}
        assert port_mismatches(role, env, ports) == [], doc["metadata"]["name"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in container and role == "gateway":
                path = container[probe]["httpGet"]["path"]
                assert f'@router.get("{path}"' in gateway_routes, path
    services = {d["metadata"]["name"]: d for d in k8s_documents() if d["kind"] == "Service"}
    assert services["durable-chat-gateway"]["spec"]["ports"][0]["port"] == GATEWAY_PORT
    assert services["durable-chat-ui"]["spec"]["ports"][0]["port"] == UI_PORT


def test_dockerfile_exposes_and_checks_the_gateway_port() -> None:
    instructions = dockerfile_runtime_stage()
    exposed = {int(p) for ins, a in instructions if ins == "EXPOSE" for p in a.split()}
    assert exposed == {GATEWAY_PORT, UI_PORT}
    (healthcheck,) = [a for ins, a in instructions if ins == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and f"'{GATEWAY_PORT}'" in healthcheck
    assert '@router.get("/healthz"' in (ROOT / "api" / "routes" / "health.py").read_text()


# ------------------------------------------------------------------ commands ------


def test_commands_start_modules_that_exist() -> None:
    commands = [json.loads(a) for ins, a in dockerfile_instructions() if ins == "CMD"]
    commands += [s["command"] for s in our_compose_services().values()]
    commands += [c["command"] for _, c in our_k8s_containers()]
    assert len(commands) >= 8
    for argv in commands:
        assert missing_command_targets(argv) == [], argv
    # `python -m ui` is Chainlit's `chainlit run ui/app.py`: the app file must exist too.
    assert "ui/app.py" in (ROOT / "ui" / "__main__.py").read_text().replace('"app.py"', "ui/app.py")
    assert missing_command_targets(["chainlit", "run", "ui/app.py"]) == []


def test_dockerfile_runs_as_non_root_from_python_3_11_slim() -> None:
    instructions = dockerfile_runtime_stage()
    (user,) = [a for ins, a in instructions if ins == "USER"]
    assert user.split(":")[0] not in {"0", "root"}
    args = dict(
        a.split("=", 1) for ins, a in dockerfile_instructions() if ins == "ARG" and "=" in a
    )
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", args["PYTHON_IMAGE"])
    assert any("pip install" in a and " ." in a for ins, a in dockerfile_instructions())


# ------------------------------------------------------------------ Temporal ------


def test_search_attribute_registration_is_identical_in_compose_and_kubernetes() -> None:
    script = SETUP_SCRIPT.read_text()
    (configmap,) = [d for d in load_documents(SETUP_JOB) if d["kind"] == "ConfigMap"]
    assert configmap["data"]["temporal-setup.sh"] == script
    registered = dict(re.findall(r"^register (\w+) (\w+)$", script, flags=re.MULTILINE))
    assert registered == SEARCH_ATTRIBUTES
    services = compose()["services"]
    assert "/scripts/temporal-setup.sh" in services["temporal-setup"]["entrypoint"]
    job = next(d for d in load_documents(SETUP_JOB) if d["kind"] == "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][-1] == "/scripts/temporal-setup.sh"


def test_helm_values_use_postgres_secrets_and_the_compose_dynamic_config() -> None:
    (values,) = load_documents(HELM_VALUES)
    persistence = values["server"]["config"]["persistence"]
    for store in ("default", "visibility"):
        sql = persistence["datastores"][store]["sql"]
        assert sql["pluginName"] == "postgres12"
        assert sql["existingSecret"] and "password" not in sql
        assert sql["connectAddr"].endswith(":5432")
    assert persistence["numHistoryShards"] == 512
    assert values["server"]["config"]["namespaces"]["create"] is True
    (dynamic,) = load_documents(DYNAMIC_CONFIG)
    assert values["server"]["dynamicConfig"] == dynamic
    assert compose()["services"]["temporal"]["environment"]["NUM_HISTORY_SHARDS"] == "512"


def test_keda_scaler_targets_the_workers_task_queue() -> None:
    (scaled,) = load_documents(K8S_DIR / "optional" / "worker-keda-scaledobject.yaml")
    temporal = next(t for t in scaled["spec"]["triggers"] if t["type"] == "temporal")
    assert temporal["metadata"]["taskQueue"] == Settings.model_fields["task_queue"].default
    assert temporal["metadata"]["endpoint"].endswith(f":{TEMPORAL_PORT}")


# ------------------------------------------------------------------ optional tools -


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_the_manifests() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S_DIR)], capture_output=True, text=True, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 3 and "HorizontalPodAutoscaler" in kinds
    assert all(d["metadata"].get("namespace") == "durable-chat" for d in docs)
    ours = [r for r in image_refs(docs) if r.startswith(OUR_IMAGE)]
    assert set(ours) == {f"{OUR_IMAGE}:{pyproject_version()}"}


def test_manifests_match_the_kubernetes_schemas() -> None:
    """Strict schema validation (unknown fields rejected) with the `kubernetes-validate`
    package, which ships the API schemas (no cluster needed). CRDs (KEDA) have none."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = [d for d in k8s_documents() if not d["apiVersion"].startswith("keda.sh/")]
    assert docs
    for doc in docs:
        for version in ("1.30.0", "1.34.0"):
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_validates_the_file(tmp_path: Path) -> None:
    # A copy in the same layout (./scripts, ./dynamicconfig, build context ../..), so the
    # repository is never written to. docker-compose 1.x predates the top-level `name:`
    # key (Compose v2 accepts it): the copy drops it.
    copy_dir = tmp_path / "deploy" / "temporal"
    shutil.copytree(TEMPORAL_DIR, copy_dir, ignore=shutil.ignore_patterns(".env"))
    copy = copy_dir / "docker-compose.yml"
    copy.write_text(COMPOSE_FILE.read_text().replace("name: durable-chat\n", "", 1))
    env_file = tmp_path / "env"
    env_file.write_text(
        "".join(f"{k}=placeholder-{i}\n" for i, k in enumerate(env_example()) if is_sensitive(k))
    )
    command = ["docker-compose", "--env-file", str(env_file), "-f", str(copy), "config", "-q"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    # Without the secrets, compose refuses: the ${VAR:?} substitutions work.
    without = subprocess.run(
        ["docker-compose", "-f", str(copy), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ["PATH"]},
    )
    assert without.returncode != 0 and "Missing mandatory value" in without.stderr


# ------------------------------------------------------------------ the checkers ---


@pytest.mark.parametrize(
    ("ref", "pinned"),
    [
        ("postgres:17.6", True),
        ("temporalio/server:1.32.0", True),
        ("registry.example.com:5000/durable-chat:0.1.0", True),
        ("busybox@sha256:" + "a" * 64, True),
        ("postgres", False),
        ("postgres:latest", False),
        ("registry.example.com:5000/durable-chat", False),
        ("durable-chat:${TAG}", False),
    ],
)
def test_is_pinned(ref: str, pinned: bool) -> None:
    assert is_pinned(ref) is pinned


def test_image_refs_finds_compose_k8s_and_helm_styles() -> None:
    tree = {
        "services": {"a": {"image": "postgres"}},
        "spec": {"containers": [{"image": "x:1"}]},
        "web": {"image": {"repository": "temporalio/ui", "tag": "latest"}},
    }
    refs = image_refs(tree)
    assert sorted(refs) == ["postgres", "temporalio/ui:latest", "x:1"]
    assert [r for r in refs if not is_pinned(r)] == ["postgres", "temporalio/ui:latest"]


def test_literal_secrets_catches_every_form() -> None:
    bad = {
        "environment": {
            "OPENAI_API_KEY": "sk-live-123",
            "POSTGRES_PWD": "hunter2",
            "DATABASE_URL": "postgresql://app:hunter2@db:5432/app",
            "CHAINLIT_AUTH_SECRET": "${CHAINLIT_AUTH_SECRET:-fallback}",
        },
        "env": [{"name": "UI_PASSWORD", "value": "admin"}],
        "list_env": ["API_KEYS=k1,k2"],
        "helm": {"sql": {"password": "temporal"}},
    }
    found = literal_secrets(bad)
    assert len(found) == 7, found
    good = {
        "environment": {
            "OPENAI_API_KEY": "${OPENAI_API_KEY:-}",
            "POSTGRES_PWD": "${TEMPORAL_POSTGRES_PASSWORD:?set it}",
            "DATABASE_URL": "postgresql://app:${APP_POSTGRES_PASSWORD:?x}@db:5432/app",
            "UI_USERNAME": "admin",
        },
        "env": [
            {"name": "UI_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "K"}}},
        ],
        "helm": {"sql": {"existingSecret": "temporal-postgres", "secretKey": "password"}},
    }
    assert literal_secrets(good) == []


def test_unknown_env_and_the_allow_list() -> None:
    allowed = allowed_env_names()
    assert {"DATABASE_URL", "GATEWAY_PORT", "UI_PASSWORD", "SIM_PORT", "LOG_FORMAT"} <= allowed
    assert unknown_env({"DATABASE_URL", "DATABSE_URL", "GATEWAYPORT"}, allowed) == [
        "DATABSE_URL",
        "GATEWAYPORT",
    ]
    assert all(reason for reason in ALLOWED_EXTRA_ENV.values())


def test_port_mismatches_flags_wrong_ports() -> None:
    assert port_mismatches("gateway", {"GATEWAY_PORT": "8000"}, {8000}) == []
    assert port_mismatches("gateway", {"GATEWAY_PORT": "8080"}, {8000}) != []
    assert port_mismatches("ui", {}, {8000}) != []
    assert port_mismatches("gateway", {}, set()) == []  # nothing exposed: nothing to compare


def test_missing_command_targets_flags_what_does_not_exist() -> None:
    assert missing_command_targets(["python", "-m", "api"]) == []
    assert missing_command_targets(["python", "worker.py"]) == []
    assert missing_command_targets(["python", "-m", "gateway"]) == ["gateway"]
    assert missing_command_targets(["python", "workers.py"]) == ["workers.py"]
    assert missing_command_targets(["chainlit", "run", "ui/main.py"]) == ["ui/main.py"]
    assert missing_command_targets(["uvicorn", "api.main:app"]) == ["uvicorn api.main:app"]


def test_a_broken_compose_file_fails_the_checks(tmp_path: Path) -> None:
    """The whole pipeline on a deliberately broken file: every check has something to say."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        "services:\n"
        "  gateway:\n"
        "    image: durable-chat:latest\n"
        "    command: [python, -m, gatway]\n"
        "    ports: ['8080:8080']\n"
        "    environment:\n"
        "      GATEWAY_PORT: '8080'\n"
        "      DATABSE_URL: postgresql://u:p4ss@db/x\n"
        "      OPENAI_API_KEY: sk-test\n"
    )
    (doc,) = load_documents(broken)
    service = doc["services"]["gateway"]
    assert not is_pinned(service["image"])
    assert missing_command_targets(service["command"]) == ["gatway"]
    assert port_mismatches("gateway", service["environment"], {8080})
    assert unknown_env(compose_env_names(service), allowed_env_names()) == ["DATABSE_URL"]
    assert len(literal_secrets(doc)) == 2
