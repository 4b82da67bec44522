"""What the Kubernetes schemas cannot say about the rendered manifests of deploy/k8s (`kubectl kustomize` output):
no Secret and no credential in them, workers on one GPU with /readyz and /healthz probes and a grace period for
the batch in hand, a PodDisruptionBudget over them, KEDA scaling them to zero, the dispatcher as a Job, and
Prometheus annotations. Run by deploy/checks/run: python k8s_semantics.py rendered.yaml..."""

import re
import sys

import yaml

CREDENTIAL = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|AMQP_URL")


def check(text: str) -> list[str]:
    objects = [o for o in yaml.safe_load_all(text) if o]
    by_kind: dict[str, list[dict]] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    problems = []
    if by_kind.get("Secret"):
        problems.append("a Secret is rendered: credentials come from Secrets the operator creates")
    workloads = by_kind.get("Deployment", []) + by_kind.get("Job", [])
    for workload in workloads:
        name = f'{workload["kind"]}/{workload["metadata"]["name"]}'
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if CREDENTIAL.search(env["name"]) and "secretKeyRef" not in env.get("valueFrom", {}):
                    problems.append(f"{name}: {env['name']} is not read from a Secret")
    workers = by_kind.get("Deployment", [])
    if not workers:
        problems.append("no worker Deployment")
    for worker in workers:
        name = f'Deployment/{worker["metadata"]["name"]}'
        pod = worker["spec"]["template"]
        spec = pod["spec"]
        container = spec["containers"][0]
        if str(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")) != "1":
            problems.append(f"{name}: must ask for nvidia.com/gpu: 1")
        if container.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            problems.append(f"{name}: readiness must ask /readyz")
        if container.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
            problems.append(f"{name}: liveness must ask /healthz")
        if spec.get("terminationGracePeriodSeconds", 30) < 600:
            problems.append(f"{name}: terminationGracePeriodSeconds must cover the batch in hand")
        if pod["metadata"].get("annotations", {}).get("prometheus.io/scrape") != "true":
            problems.append(f"{name}: pods lack the prometheus.io/scrape annotation")
        labels = pod["metadata"]["labels"]
        selects = lambda selector: all(labels.get(k) == v for k, v in selector["matchLabels"].items())  # noqa: E731
        if not any(selects(pdb["spec"]["selector"]) for pdb in by_kind.get("PodDisruptionBudget", [])):
            problems.append(f"{name}: no PodDisruptionBudget selects its pods")
        scaled = [s for s in by_kind.get("ScaledObject", []) if s["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]]
        if len(scaled) != 1:
            problems.append(f"{name}: expected one ScaledObject, found {len(scaled)}")
        elif scaled[0]["spec"].get("minReplicaCount") != 0:
            problems.append(f"{name}: its ScaledObject must scale to zero (minReplicaCount: 0)")
        if "replicas" in worker["spec"]:
            problems.append(f"{name}: replicas is KEDA's to set")
    if not by_kind.get("Job"):
        problems.append("no dispatcher Job")
    return problems


if __name__ == "__main__":
    failed = False
    for argument in sys.argv[1:]:
        with open(argument) as file:
            problems = check(file.read())
        for problem in problems:
            print(f"{argument}: {problem}", file=sys.stderr)
        failed |= bool(problems)
        if not problems:
            print(f"{argument}: ok")
    sys.exit(1 if failed else 0)
