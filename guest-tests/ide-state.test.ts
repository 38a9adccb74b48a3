/**
 * The IDE controller saved with the machine while the guest streams reads from its disk, and
 * restored in a fresh process: the guest's read finishes with the right data and no lasting error.
 */
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { bootGuest } from "../machine/guest-session.js";
import { createRaw } from "../media/formats/raw/raw.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";
import { bundleForNode } from "./support/bundle.js";
import { addIdeWithDisk } from "./support/state-machines.js";

const MiB = 1 << 20;

describe("IDE save/restore with reads in flight", () => {
  it("resumes in a fresh process and the guest's read completes with the right data", async () => {
    const dir = mkdtempSync(join(tmpdir(), "vstor-ide-state-"));
    const path = join(dir, "disk.raw");
    const disk = await createRaw(new NodeFileOpener(), path, 64 * MiB);
    const data = new Uint8Array(64 * MiB);
    for (let i = 0; i < data.length; i += 4) new DataView(data.buffer).setUint32(i, i * 2654435761, true);
    await disk.write(0, data);
    await disk.flush();
    // The guest reads the whole disk three times over: long enough to be caught mid-stream.
    const md5 = createHash("md5").update(data).update(data).update(data).digest("hex");

    const guest = await bootGuest({ setup: (host) => void addIdeWithDisk(host, disk) });
    const started = await guest.run(`
      (for k in 1 2 3; do dd if=/dev/sda bs=64k count=1024 iflag=direct 2>/dev/null; done | md5sum > /tmp/md5.out; echo done >> /tmp/md5.out) &
      sleep 0.3; grep -q done /tmp/md5.out 2>/dev/null && echo finished-too-early || echo still-reading`);
    expect(started.output).toContain("still-reading");
    await guest.vm.emulator.stop();
    const state = await guest.vm.saveState();
    await guest.stop();
    await disk.close();
    writeFileSync(join(dir, "state.bin"), new Uint8Array(state));
    writeFileSync(
      join(dir, "script.sh"),
      `for i in $(seq 600); do grep -q done /tmp/md5.out 2>/dev/null && break; sleep 0.1; done
       cat /tmp/md5.out
       dd if=/dev/sda bs=64k count=16 iflag=direct 2>/dev/null | wc -c`,
    );
    const runner = await bundleForNode("guest-tests/support/restore-runner.ts");
    const r = spawnSync(process.execPath, ["--v8-pool-size=1", runner, join(dir, "state.bin"), join(dir, "script.sh"), `ide:${path}`], {
      encoding: "utf8",
      timeout: 300_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout.trim().split("\n").pop()!) as { status: number; output: string };
    expect(result.output).toContain(md5);
    expect(result.output).toContain(String(16 * 64 * 1024)); // the disk still answers afterwards
    expect(readFileSync(path).length).toBe(64 * MiB);
  });
});
