// Validates the KEDA objects (ScaledObject, TriggerAuthentication, ...) of rendered Kubernetes manifests against
// KEDA's own schemas, shipped compiled in @kubernetes-models/keda (the core kinds are checked by
// kubernetes-validate), and checks that each ScaledObject names a Deployment and a TriggerAuthentication of the
// same render and a route's job queue (vislingo.jobs.<route>, the Deployment's VISLINGO_ROUTE).
// Usage: node keda.mjs rendered.yaml... (deploy/checks/run passes `kubectl kustomize` output).
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";

let checked = 0;
let failures = 0;
for (const file of process.argv.slice(2)) {
  const objects = parseAllDocuments(readFileSync(file, "utf8")).map((doc) => doc.toJS()).filter(Boolean);
  const named = (kind) => new Map(objects.filter((o) => o.kind === kind).map((o) => [o.metadata.name, o]));
  const deployments = named("Deployment");
  const auths = named("TriggerAuthentication");
  const refuse = (name, why) => {
    console.error(`${name}: ${why}`);
    failures += 1;
  };
  for (const object of objects) {
    if (!object || object.apiVersion !== "keda.sh/v1alpha1") continue;
    const Model = keda[object.kind];
    const name = `${file}: ${object.kind}/${object.metadata?.name}`;
    if (!Model) {
      refuse(name, "no such KEDA kind");
      continue;
    }
    try {
      new Model(object).validate();
      checked += 1;
      console.log(`${name}: valid`);
    } catch (error) {
      refuse(name, error.message);
      continue;
    }
    if (object.kind !== "ScaledObject") continue;
    const target = deployments.get(object.spec.scaleTargetRef.name);
    if (!target) {
      refuse(name, `scaleTargetRef ${object.spec.scaleTargetRef.name} is no Deployment of this render`);
      continue;
    }
    const env = target.spec.template.spec.containers[0].env ?? [];
    const route = env.find((e) => e.name === "VISLINGO_ROUTE")?.value;
    for (const trigger of object.spec.triggers) {
      if (trigger.authenticationRef && !auths.has(trigger.authenticationRef.name)) {
        refuse(name, `authenticationRef ${trigger.authenticationRef.name} is no TriggerAuthentication of this render`);
      }
      if (trigger.type === "rabbitmq" && trigger.metadata.queueName !== `vislingo.jobs.${route}`) {
        refuse(name, `queueName ${trigger.metadata.queueName} is not the queue of route ${route}`);
      }
    }
  }
}
if (checked === 0 && failures === 0) {
  console.error("no KEDA object found");
  process.exit(1);
}
process.exit(failures ? 1 : 0);
