/**
 * AHCI port counts in a Linux guest: a 1-port HBA, and a 30-port HBA with disks on ports 0, 17 and
 * 29 (the ones beyond the four IDE-compatibility ports are hidden from SeaBIOS and appear when
 * Linux resets the HBA). Each disk carries a text sector the host wrote.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AhciController } from "../devices/ahci/index.js";
import { bootGuest, type GuestSession } from "../machine/guest-session.js";
import { createRaw, type RawBackend } from "../media/formats/raw/raw.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";
import { textSector } from "./support/ide-pattern.js";

const MiB = 1 << 20;
let dir: string | undefined;
let guest: GuestSession | undefined;
const media: RawBackend[] = [];

afterEach(async () => {
  await guest?.stop();
  guest = undefined;
  for (const m of media.splice(0)) await m.close().catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function bootWith(portCount: number, diskPorts: number[]): Promise<string> {
  dir = mkdtempSync(join(tmpdir(), `vstor-ahci-${portCount}-`));
  const ports: Record<number, { kind: "ata"; medium: RawBackend; serial: string }> = {};
  for (const p of diskPorts) {
    const m = await createRaw(new NodeFileOpener(), join(dir, `p${p}.raw`), (8 + p) * MiB);
    await m.write(512, textSector(`SATA-PORT-${p}-TEXT`));
    media.push(m);
    ports[p] = { kind: "ata", medium: m, serial: `VBPORT-${p}` };
  }
  guest = await bootGuest({ setup: (host) => void new AhciController(host, { portCount, ports }) });
  const r = await guest.run(`
    dmesg | grep -E 'ahci 0000:00:0d.0: AHCI' | sed 's/^\\[[ .0-9]*\\] //'
    for d in /sys/block/sd*; do
      b=$(basename $d)
      echo "$b $(cat $d/size) $(readlink $d | grep -o 'ata[0-9]*' | head -1) $(dd if=/dev/$b bs=512 skip=1 count=1 2>/dev/null | head -c 18)"
    done`);
  expect(r.status, r.output).toBe(0);
  console.log(r.output);
  return r.output;
}

describe("AHCI port counts in a Linux guest", () => {
  it("a 1-port HBA: one port implemented, its disk found", async () => {
    const out = await bootWith(1, [0]);
    expect(out).toMatch(/AHCI [0-9.]+ 32 slots 1 ports .* 0x1 impl SATA mode/);
    expect(out).toMatch(new RegExp(`sda ${(8 * MiB) / 512} ata1 SATA-PORT-0-TEXT`));
  });

  it("a 30-port HBA: disks on ports 0, 17 and 29, each on its own ata link", async () => {
    const out = await bootWith(30, [0, 17, 29]);
    expect(out).toMatch(/AHCI [0-9.]+ 32 slots 30 ports .* 0x3fffffff impl SATA mode/);
    expect(out).toMatch(new RegExp(`sda ${(8 * MiB) / 512} ata1 SATA-PORT-0-TEXT`));
    expect(out).toMatch(new RegExp(`sdb ${(25 * MiB) / 512} ata18 SATA-PORT-17-TEXT`));
    expect(out).toMatch(new RegExp(`sdc ${(37 * MiB) / 512} ata30 SATA-PORT-29-TEXT`));
  });
});
