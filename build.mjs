// Bundles the CLI into dist/vstor.mjs. v86 stays external: it finds its wasm next to itself.
import { build } from "esbuild";
import { chmodSync } from "node:fs";

await build({
  entryPoints: ["cli/main.ts"],
  outfile: "dist/vstor.mjs",
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  sourcemap: true,
  external: ["v86"],
  banner: { js: "#!/usr/bin/env node\nimport { createRequire as __vstorCreateRequire } from 'node:module'; const require = __vstorCreateRequire(import.meta.url);" },
  logLevel: "warning",
});
chmodSync("dist/vstor.mjs", 0o755);
