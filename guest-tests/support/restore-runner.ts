/**
 * Runs in a fresh Node process: restores a machine saved by a guest test (same devices
 * registered first), then runs one agent script and prints its result as JSON on stdout.
 * usage: node restore-runner.mjs STATE_FILE SCRIPT_FILE [fixtures | ide:DISK.raw | ahci:DISK.raw]
 */
import { readFileSync } from "node:fs";
import type { Host } from "../../host-adapter/host.js";
import { bootGuest } from "../../machine/guest-session.js";
import { addSharedLineFixtures } from "./fixtures.js";
import { addAhciWithDisk, addIdeWithDisk } from "./state-machines.js";
import { openRaw } from "../../media/formats/raw/raw.js";
import { NodeFileOpener } from "../../media/io/node/node-file-io.js";

const [stateFile, scriptFile, devices = "fixtures"] = process.argv.slice(2);
const state = readFileSync(stateFile);
let setup: (host: Host) => void = (host) => void addSharedLineFixtures(host);
if (devices.startsWith("ide:")) {
  const disk = await openRaw(new NodeFileOpener(), devices.slice(4));
  setup = (host) => addIdeWithDisk(host, disk);
} else if (devices.startsWith("ahci:")) {
  const disk = await openRaw(new NodeFileOpener(), devices.slice(5));
  setup = (host) => addAhciWithDisk(host, disk);
}
const session = await bootGuest({
  initialState: state.buffer.slice(state.byteOffset, state.byteOffset + state.byteLength) as ArrayBuffer,
  setup,
});
try {
  const result = await session.run(readFileSync(scriptFile, "utf8"), 180_000);
  process.stdout.write(JSON.stringify({ status: result.status, output: result.output }) + "\n");
} finally {
  await session.stop();
}
process.exit(0);
