/**
 * Runs in a fresh Node process: restores a machine saved by a guest test (same devices
 * registered first), then runs one agent script and prints its result as JSON on stdout.
 * usage: node restore-runner.mjs STATE_FILE SCRIPT_FILE
 */
import { readFileSync } from "node:fs";
import { bootGuest } from "../../machine/guest-session.js";
import { addSharedLineFixtures } from "./fixtures.js";

const [stateFile, scriptFile] = process.argv.slice(2);
const state = readFileSync(stateFile);
const session = await bootGuest({
  initialState: state.buffer.slice(state.byteOffset, state.byteOffset + state.byteLength) as ArrayBuffer,
  setup: (host) => void addSharedLineFixtures(host),
});
try {
  const result = await session.run(readFileSync(scriptFile, "utf8"), 120_000);
  process.stdout.write(JSON.stringify({ status: result.status, output: result.output }) + "\n");
} finally {
  await session.stop();
}
process.exit(0);
