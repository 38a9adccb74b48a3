/**
 * The AHCI controller saved with the machine while NCQ commands are in flight, restored in a fresh
 * process: the reads held at the medium when the machine stopped are never completed in the first
 * process; after the restore the HBA fetches the queued commands again from the guest's command
 * list, and the guest's verifying reader (vstor-io, queue depth 32) finishes with every sector right.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { AhciController } from "../devices/ahci/index.js";
import { bootGuest } from "../machine/guest-session.js";
import { openRaw } from "../media/formats/raw/raw.js";
import { FaultControl, HeldFileOpener } from "../media/io/fault-io.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";
import { bundleForNode } from "./support/bundle.js";
import { vstorIoSector } from "./support/ide-pattern.js";
import { addAhciWithDisk } from "./support/state-machines.js";

const MiB = 1 << 20;
const DISK = 32 * MiB;
const SEED = 5;

const popcount = (x: number) => x.toString(2).replace(/0/g, "").length;

describe("AHCI save/restore with NCQ commands in flight", () => {
  it("resumes in a fresh process; the queued reads are re-issued and the guest's verified reads all pass", async () => {
    const dir = mkdtempSync(join(tmpdir(), "vstor-ahci-state-"));
    try {
      const path = join(dir, "disk.raw");
      const pattern = new Uint8Array(DISK);
      for (let lba = 0; lba < DISK / 512; lba++) pattern.set(vstorIoSector(lba, SEED), lba * 512);
      writeFileSync(path, pattern);
      const faults = new FaultControl();
      const disk = await openRaw(new HeldFileOpener(new NodeFileOpener(), faults), path);
      let ahci: AhciController | undefined;
      const guest = await bootGuest({ setup: (host) => void (ahci = addAhciWithDisk(host, disk)) });
      const started = await guest.run(`
        (vstor-io --dev /dev/sda --op randread --verify --bs 4096 --qd 32 --count 6000 --seed ${SEED} > /tmp/io.out 2>&1; echo "rc=$?" >> /tmp/io.out) &
        sleep 0.3; grep -q rc= /tmp/io.out && echo finished-too-early || echo still-reading`);
      expect(started.output).toContain("still-reading");
      // Hold every read at the medium, let the queue fill up, then stop and save.
      faults.hold(["read"]);
      await faults.whenHeld(16);
      await new Promise((r) => setTimeout(r, 200));
      await guest.vm.emulator.stop();
      const port = (ahci as unknown as { ports: { sact: number; ci: number }[] }).ports[0]!;
      const inFlight = popcount(port.sact);
      console.log(`NCQ commands in flight at save: ${inFlight} (SACT ${port.sact.toString(16)}), held reads: ${faults.held.length}`);
      expect(inFlight).toBeGreaterThan(1);
      const state = await guest.vm.saveState();
      writeFileSync(join(dir, "state.bin"), new Uint8Array(state));
      await guest.stop();
      faults.stopHolding();
      faults.releaseAll(); // into the stopped machine: never seen by the saved state
      await disk.close();

      writeFileSync(join(dir, "script.sh"), `
        for i in $(seq 900); do grep -q rc= /tmp/io.out 2>/dev/null && break; sleep 0.1; done
        cat /tmp/io.out
        dmesg | grep -cE 'failed command|exception Emask' | sed 's/^/ata-errors: /'`);
      const runner = await bundleForNode("guest-tests/support/restore-runner.ts");
      const r = spawnSync(process.execPath, ["--v8-pool-size=1", runner, join(dir, "state.bin"), join(dir, "script.sh"), `ahci:${path}`], {
        encoding: "utf8",
        timeout: 300_000,
      });
      expect(r.status, r.stderr).toBe(0);
      const result = JSON.parse(r.stdout.trim().split("\n").pop()!) as { status: number; output: string };
      console.log(result.output);
      expect(result.output).toMatch(/vstor-io: op=randread .* qd=32 .* verified=yes/);
      expect(result.output).toContain("rc=0");
      expect(result.output).toContain("ata-errors: 0");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
