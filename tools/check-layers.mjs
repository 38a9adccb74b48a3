// Layering, enforced: devices/ never import v86 or the v86 adapter (only host-adapter/host.ts
// and shared host-side models), media/ never imports devices/, and nothing imports ../shared.
// The type-level half (no Node types in devices/ and the pure codecs) is tsconfig.common.json.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, resolve, dirname } from "node:path";

const root = resolve(dirname(new URL(import.meta.url).pathname), "..");
const rules = [
  { dir: "devices", forbid: [/^v86$/, /host-adapter\/v86\//, /host-adapter\/testbench\//, /^node:/, /\/machine\//, /\/cli\//], allowTests: [/host-adapter\/testbench\//] },
  { dir: "media", forbid: [/\/devices\//, /^v86$/, /host-adapter\/v86\//] },
  { dir: "host-adapter/testbench", forbid: [/^v86$/, /host-adapter\/v86\//, /^node:/] },
];
const importRe = /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

function* files(dir) {
  let entries;
  try { entries = readdirSync(dir); } catch { return; }
  for (const e of entries) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) yield* files(p);
    else if (/\.(ts|mts|mjs|js)$/.test(e)) yield p;
  }
}

const problems = [];
for (const file of files(root)) {
  const rel = relative(root, file);
  if (rel.startsWith("node_modules") || rel.startsWith("dist") || rel.startsWith("build")) continue;
  const text = readFileSync(file, "utf8");
  for (const m of text.matchAll(importRe)) {
    const spec = m[1] ?? m[2];
    const target = spec.startsWith(".") ? relative(root, resolve(dirname(file), spec)) : spec;
    if (/(^|\/)shared\//.test(target) && target.startsWith("..")) problems.push(`${rel}: imports ${spec} (nothing may depend on ../shared)`);
    for (const rule of rules) {
      if (!rel.startsWith(rule.dir + "/")) continue;
      const isTest = rel.endsWith(".test.ts");
      for (const f of rule.forbid) {
        const probe = spec.startsWith(".") ? "/" + target : spec;
        if (!f.test(probe)) continue;
        if (isTest && rule.allowTests?.some((a) => a.test(probe))) continue;
        if (isTest && /^node:/.test(spec)) continue;
        problems.push(`${rel}: ${rule.dir}/ must not import ${spec}`);
      }
    }
  }
}
if (problems.length) {
  console.error("Layering violations:\n" + problems.map((p) => "  " + p).join("\n"));
  process.exit(1);
}
console.log("layers: ok");
