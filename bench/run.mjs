// Bundles bench/run.ts (or the script named, e.g. bench/clone-one.ts) and runs it (benchmarks
// are TypeScript like the rest).
import { build } from "esbuild";
import { mkdirSync } from "node:fs";
import { basename } from "node:path";
import { spawnSync } from "node:child_process";

const entry = process.argv[2] ?? "bench/run.ts";
const bundle = `build/test-bundles/bench-${basename(entry, ".ts")}.mjs`;
mkdirSync("build/test-bundles", { recursive: true });
await build({
  entryPoints: [entry],
  outfile: bundle,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  external: ["v86", "esbuild"],
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  logLevel: "warning",
});
const r = spawnSync(process.execPath, [...process.execArgv, bundle], { stdio: "inherit" });
process.exit(r.status ?? 1);
