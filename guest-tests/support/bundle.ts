/** Bundles a TypeScript entry point so a test can run it in a fresh Node process. */
import { build } from "esbuild";
import { mkdirSync } from "node:fs";
import { basename, join } from "node:path";
import { projectRoot } from "../../machine/guest-images.js";

export async function bundleForNode(entry: string): Promise<string> {
  // Inside the checkout, so Node finds the external v86 package from the bundle.
  const dir = join(projectRoot(), "build", "test-bundles");
  mkdirSync(dir, { recursive: true });
  const outfile = join(dir, basename(entry).replace(/\.ts$/, ".mjs"));
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    external: ["v86"],
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
    logLevel: "warning",
  });
  return outfile;
}
