/**
 * One measured boot, in its own process (Node flags apply per process). Prints JSON timings:
 * seconds from start to the guest's init, to modules loaded, and to the end of a short script.
 * usage: node boot-child.mjs vstor|plain
 *   vstor: our V86Host installed (built-in IDE replaced, hooks in place)
 *   plain: the same v86 and guest with no vstor code at all (the peer)
 */
import { bootGuest } from "../machine/guest-session.js";
import { startPlainV86 } from "./v86-peer.js";

const mode = process.argv[2] ?? "vstor";
const script = "cat /proc/uptime\n";
const t0 = performance.now();
const since = () => (performance.now() - t0) / 1000;

if (mode === "vstor") {
  const s = await bootGuest({ script, mode: "agent" });
  await s.console.result("0", 300_000);
  const end = since();
  await s.stop();
  console.log(JSON.stringify({ booted: s.timings.booted, ready: s.timings.ready, scriptEnd: end }));
} else {
  const { console: c, stop } = startPlainV86(script);
  await c.waitFor("@@VSTOR BOOTED", 300_000);
  const booted = since();
  await c.waitFor("@@VSTOR READY", 300_000);
  const ready = since();
  await c.result("0", 300_000);
  const end = since();
  await stop();
  console.log(JSON.stringify({ booted, ready, scriptEnd: end }));
}
process.exit(0);
