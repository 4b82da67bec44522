// Type-checks each Grafana dashboard of deploy/grafana/dashboards against @grafana/schema: writes a TypeScript
// module per dashboard that assigns its JSON, as object literals, to the schema's Dashboard type, each panel's
// options and custom field config to its panel plugin's types, and each target to a Prometheus query; `tsc`
// then rejects unknown keys, wrong types and enum values that do not exist. Run by deploy/checks/run.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dashboards = join(here, "..", "grafana", "dashboards");
const out = join(here, "build");
mkdirSync(out, { recursive: true });

const cfg = (plugin, file) => `@grafana/schema/dist/esm/raw/composable/${plugin}/panelcfg/x/${file}_types.gen`;
// Panel plugins whose options this check knows; any other panel type is refused.
const plugins = {
  timeseries: { module: cfg("timeseries", "TimeSeriesPanelCfg"), custom: true },
  stat: { module: cfg("stat", "StatPanelCfg"), custom: false },
  table: { module: cfg("table", "TablePanelCfg"), custom: true },
};

const header = `import type { Dashboard } from "@grafana/schema";
${Object.entries(plugins)
  .map(([name, p]) => `import type * as ${name} from "${p.module}";`)
  .join("\n")}

// JSON holds enum members as their values ("absolute", not ThresholdsMode.Absolute): compare against those.
type Lit<T> = T extends string
  ? \`\${T}\`
  : T extends number | boolean | null | undefined
    ? T
    : T extends Array<infer U>
      ? Array<Lit<U>>
      : T extends object
        ? { [K in keyof T]: Lit<T[K]> }
        : T;

// A Prometheus query as Grafana stores it.
interface PromTarget {
  refId: string;
  expr: string;
  datasource: { type: "prometheus"; uid: string };
  editorMode?: "code" | "builder";
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
  format?: "time_series" | "table" | "heatmap";
  interval?: string;
  hide?: boolean;
}
`;

let failures = 0;
for (const file of readdirSync(dashboards).filter((f) => f.endsWith(".json"))) {
  const dashboard = JSON.parse(readFileSync(join(dashboards, file), "utf8"));
  const lines = [header, `export const dashboard: Lit<Dashboard> = ${JSON.stringify(dashboard, null, 2)};`];
  const panels = (dashboard.panels ?? []).flatMap((p) => (p.type === "row" ? [p, ...(p.panels ?? [])] : [p]));
  for (const panel of panels) {
    if (panel.type === "row") continue;
    const plugin = plugins[panel.type];
    if (!plugin) {
      console.error(`${file}: panel ${panel.id} "${panel.title}": type ${panel.type} is not checked here`);
      failures += 1;
      continue;
    }
    const name = `panel${panel.id}`;
    lines.push(`export const ${name}Options: Lit<Partial<${panel.type}.Options>> = ${JSON.stringify(panel.options ?? {})};`);
    if (plugin.custom) {
      const custom = panel.fieldConfig?.defaults?.custom ?? {};
      lines.push(`export const ${name}Custom: Lit<Partial<${panel.type}.FieldConfig>> = ${JSON.stringify(custom)};`);
    }
    lines.push(`export const ${name}Targets: PromTarget[] = ${JSON.stringify(panel.targets ?? [])};`);
  }
  writeFileSync(join(out, file.replace(/\.json$/, ".check.ts")), lines.join("\n\n") + "\n");
  console.log(`${file}: ${panels.length} panels written for tsc`);
}
process.exit(failures ? 1 : 0);
