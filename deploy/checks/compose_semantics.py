"""What the Compose schema cannot say about deploy/compose/compose.yaml (YAML anchors and merge keys resolved):
every dependency, volume and build file exists, the workers reserve an NVIDIA GPU, cache their models in a
volume, are health-checked on /readyz and get time to drain, and no credential is written in the file.
Run by deploy/checks/run: python compose_semantics.py deploy/compose/compose.yaml"""

import re
import sys
from pathlib import Path

import yaml

SECRET_NAMES = re.compile(r"PASSWORD|SECRET|TOKEN|_PASS$")
# A credential comes from the environment (.env), never from this file: `${NAME...}` or empty.
FROM_ENV = re.compile(r"^(\$\{[A-Z0-9_]+(:?[-?][^}]*)?\})?$")


def duration_seconds(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text):
        total += float(number) * units[unit]
    return total


def check(path: Path) -> list[str]:
    compose = yaml.safe_load(path.read_text())
    services = compose["services"]
    volumes = set(compose.get("volumes") or {})
    problems = []
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            if dependency not in services:
                problems.append(f"{name}: depends on unknown service {dependency}")
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source", "")
            if source.startswith((".", "/")):
                if not (path.parent / source).exists():
                    problems.append(f"{name}: bind mount {source} does not exist")
            elif source not in volumes:
                problems.append(f"{name}: volume {source} is not declared")
        build = service.get("build")
        if build:
            dockerfile = path.parent / build["context"] / build["dockerfile"]
            if not dockerfile.exists():
                problems.append(f"{name}: {dockerfile} does not exist")
        environment = service.get("environment") or {}
        for key, value in environment.items():
            if SECRET_NAMES.search(key) and not FROM_ENV.match(str(value or "")):
                problems.append(f"{name}: {key} is written in the file; take it from .env")
        for key, value in environment.items():
            if isinstance(value, str) and re.search(r"://[^/$]*:[^@$]+@", value):
                problems.append(f"{name}: {key} holds a password in a URL")

    worker = services.get("worker") or {}
    devices = ((worker.get("deploy") or {}).get("resources") or {}).get("reservations", {}).get("devices") or []
    if not any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices):
        problems.append("worker: no NVIDIA GPU reservation (deploy.resources.reservations.devices)")
    if "replicas" in (worker.get("deploy") or {}) or "container_name" in worker:
        problems.append("worker: fixed replicas or container_name prevent --scale worker=N")
    if "/readyz" not in " ".join(map(str, (worker.get("healthcheck") or {}).get("test", []))):
        problems.append("worker: the health check must ask /readyz")
    if duration_seconds(worker.get("stop_grace_period", "10s")) < 300:
        problems.append("worker: stop_grace_period must leave time to finish the batch in hand")
    environment = worker.get("environment") or {}
    for key in ("AMQP_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_ENDPOINT", "HF_HOME", "VISLINGO_ROUTE"):
        if key not in environment:
            problems.append(f"worker: {key} is not set")
    home = str(environment.get("HF_HOME", ""))
    if not any(str(m).split(":")[1] in home for m in worker.get("volumes") or [] if ":" in str(m)):
        problems.append("worker: HF_HOME is not on a volume")
    dispatcher = services.get("dispatcher") or {}
    if dispatcher.get("restart", "no") != "no":
        problems.append("dispatcher: a one-shot job must not restart")
    for name in ("rabbitmq", "minio", "prometheus", "grafana"):
        if name not in services or "healthcheck" not in services[name]:
            problems.append(f"{name}: missing, or without a health check")
    return problems


if __name__ == "__main__":
    failed = False
    for argument in sys.argv[1:]:
        for problem in check(Path(argument)):
            print(f"{argument}: {problem}", file=sys.stderr)
            failed = True
        if not failed:
            print(f"{argument}: ok")
    sys.exit(1 if failed else 0)
