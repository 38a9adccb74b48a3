// Bundles bench/run.ts and runs it (benchmarks are TypeScript like the rest).
import { build } from "esbuild";
import { mkdirSync } from "node:fs";
import { spawnSync } from "node:child_process";

mkdirSync("build/test-bundles", { recursive: true });
await build({
  entryPoints: ["bench/run.ts"],
  outfile: "build/test-bundles/bench-run.mjs",
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  external: ["v86", "esbuild"],
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  logLevel: "warning",
});
const r = spawnSync(process.execPath, [...process.execArgv, "build/test-bundles/bench-run.mjs"], { stdio: "inherit" });
process.exit(r.status ?? 1);
