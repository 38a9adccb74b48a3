/**
 * Proof that V86Host is right, in a real Linux guest on the npm v86 build: two test fixtures
 * (devices/test-fixture) seen in sysfs with their IDs and BARs, registers reached through
 * /dev/port and devmem, an interrupt counted by a real driver (uio_pci_generic, which relies on
 * the INTx status and disable bits), wired-OR on a shared line, DMA over code the guest has run,
 * and a save with a DMA in flight restored in a fresh process where it then completes.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bootGuest, type GuestSession } from "../machine/guest-session.js";
import type { TestFixture } from "../devices/test-fixture/fixture.js";
import { REG } from "../devices/test-fixture/fixture.js";
import { bundleForNode } from "./support/bundle.js";
import { addSharedLineFixtures, irqCount, LIST_FIXTURES, parseFixtures, portRead32, portWrite32, type GuestFixture } from "./support/fixtures.js";

let guest: GuestSession;
let hostFixtures: [TestFixture, TestFixture];
let seen: GuestFixture[];

async function sh(script: string): Promise<string> {
  const r = await guest.run(script);
  if (r.status !== 0) throw new Error(`guest script failed (${r.status}):\n${script}\n--- output ---\n${r.output}`);
  return r.output;
}

beforeAll(async () => {
  guest = await bootGuest({ setup: (host) => (hostFixtures = addSharedLineFixtures(host)) });
  seen = parseFixtures(await sh(LIST_FIXTURES));
});
afterAll(async () => {
  await guest?.stop();
});

describe("V86Host in a Linux guest", () => {
  it("shows both fixtures in sysfs with their IDs, class and BARs where the host decodes them", () => {
    expect(seen).toHaveLength(2);
    for (const [i, g] of seen.entries()) {
      const fn = hostFixtures[i].pci;
      expect(g.sysfs).toContain(`:00:${(fn.devfn >> 3).toString(16).padStart(2, "0")}.0`);
      expect(g.classCode).toBe("0xff0000");
      expect(g.ioBase).toBe(fn.barBase(0)); // the BIOS moved the I/O BAR, we moved the ports
      expect(g.ioBase).toBeGreaterThanOrEqual(0x1000);
      expect(g.mmioBase).toBe(fn.barBase(1));
      expect(g.mmioEnd - g.mmioBase + 1).toBe(0x1000);
      expect(g.irq).toBe(11);
    }
  });

  it("leaves no trace of v86's built-in IDE", async () => {
    const out = await sh(`
      grep -l 0x7010 /sys/bus/pci/devices/*/device || echo "no piix ide"
      dd if=/dev/port bs=1 skip=${0x1f7} count=1 2>/dev/null | hexdump -v -e '1/1 "status1f7=%02x\\n"'
      dd if=/dev/port bs=1 skip=${0x177} count=1 2>/dev/null | hexdump -v -e '1/1 "status177=%02x\\n"'
      ls /sys/block`);
    expect(out).toContain("no piix ide");
    expect(out).toContain("status1f7=ff");
    expect(out).toContain("status177=ff");
    expect(out).not.toMatch(/\bsr0\b|\bsda\b/);
  });

  it("reaches the scratch register through the I/O BAR (/dev/port) and the memory BAR (devmem)", async () => {
    const [a] = seen;
    const out = await sh(`
      ${portWrite32(a.ioBase + REG.SCRATCH, 0xdeadbeef)}
      echo "via mmio: $(devmem ${a.mmioBase + REG.SCRATCH} 32)"
      devmem ${a.mmioBase + REG.SCRATCH} 32 0x12345678
      echo "via port: $(${portRead32(a.ioBase + REG.SCRATCH)})"
      echo "magic: $(devmem ${a.mmioBase + REG.MAGIC} 32)"`);
    expect(out).toContain("via mmio: 0xDEADBEEF");
    expect(out).toContain("via port: 12345678");
    expect(out).toContain("magic: 0x76737472");
  });

  it("keeps a shared line up while either fixture asserts it (wired-OR), seen in the PIC's IRR", async () => {
    const [a, b] = seen;
    const out = await sh(`
      irr() { printf '\\012' | dd of=/dev/port bs=1 seek=160 count=1 2>/dev/null
              dd if=/dev/port bs=1 skip=160 count=1 2>/dev/null | hexdump -v -e '1/1 "%u\\n"'; }
      line() { echo "$1 irq11=$(( ($(irr) >> 3) & 1 ))"; }
      line idle
      devmem ${a.mmioBase + REG.IRQ} 32 1; line a-up
      devmem ${b.mmioBase + REG.IRQ} 32 1; line a+b-up
      devmem ${a.mmioBase + REG.IRQ} 32 0; line b-up
      devmem ${b.mmioBase + REG.IRQ} 32 0; line none-up`);
    expect(out).toContain("idle irq11=0");
    expect(out).toContain("a-up irq11=1");
    expect(out).toContain("a+b-up irq11=1");
    expect(out).toContain("b-up irq11=1");
    expect(out).toContain("none-up irq11=0");
  });

  it("delivers INTx to a real driver: uio_pci_generic counts it in /proc/interrupts", async () => {
    const [a] = seen;
    const out = await sh(`
      echo "1234 7573" > /sys/bus/pci/drivers/uio_pci_generic/new_id
      sleep 0.2
      ls -d ${a.sysfs}/uio/uio* >/dev/null                    # bound
      # uio_pci_generic masks INTx (command bit 10) in its handler; user space unmasks it again
      # through config space, as the kernel's UIO howto describes.
      unmask() {
        cmd=$(dd if=${a.sysfs}/config bs=2 skip=2 count=1 2>/dev/null | hexdump -v -e '1/2 "%u"')
        new=$(( cmd & ~0x400 ))
        printf "$(printf '\\%03o\\%03o' $((new & 255)) $((new >> 8)))" | dd of=${a.sysfs}/config bs=2 seek=2 count=1 conv=notrunc 2>/dev/null
      }
      echo "before $(${irqCount(11)})"
      devmem ${a.mmioBase + REG.IRQ} 32 1; sleep 0.2          # raised from an MMIO write
      echo "after-mmio $(${irqCount(11)})"
      devmem ${a.mmioBase + REG.IRQ} 32 0
      unmask
      ${portWrite32(a.ioBase + REG.IRQ, 1)}; sleep 0.2        # raised from a port write
      echo "after-port $(${irqCount(11)})"
      ${portWrite32(a.ioBase + REG.IRQ, 0)}
      unmask
      grep uio /proc/interrupts`);
    const count = (tag: string) => Number(new RegExp(`${tag} (\\d+)`).exec(out)![1]);
    expect(count("after-mmio")).toBe(count("before") + 1);
    expect(count("after-port")).toBe(count("before") + 2);
    expect(out).toMatch(/11:.*uio_pci_generic/);
  });

  it("makes a DMA write over code the guest already ran visible to the guest", async () => {
    const [a] = seen;
    const out = await sh(`
      cmd=$(dd if=${a.sysfs}/config bs=2 skip=2 count=1 2>/dev/null | hexdump -v -e '1/2 "%u"')
      new=$(( cmd | 4 ))                                       # bus master on
      printf "$(printf '\\\\%03o\\\\%03o' $((new & 255)) $((new >> 8)))" | dd of=${a.sysfs}/config bs=2 seek=2 count=1 conv=notrunc 2>/dev/null
      vstor-dmajit code ${a.sysfs}/resource1`);
    expect(out).toMatch(/after=2/);
  });

  it("saves with a DMA in flight and completes it after a restore in a fresh process", async () => {
    const [a] = seen;
    await sh(`
      vstor-dmajit fill ${a.sysfs}/resource1 3000000 > /tmp/fill.out 2>&1 &
      for i in $(seq 50); do grep -q STARTED /tmp/fill.out && break; sleep 0.1; done
      cat /tmp/fill.out`);
    await guest.vm.emulator.stop();
    const state = await guest.vm.saveState();
    await guest.stop();
    const dir = mkdtempSync(join(tmpdir(), "vstor-save-"));
    writeFileSync(join(dir, "state.bin"), new Uint8Array(state));
    writeFileSync(
      join(dir, "script.sh"),
      `for i in $(seq 100); do grep -q RESULT /tmp/fill.out && break; sleep 0.1; done
       cat /tmp/fill.out
       echo "count $(devmem ${a.mmioBase + REG.DMA_COUNT} 32)"`,
    );
    const runner = await bundleForNode("guest-tests/support/restore-runner.ts");
    const r = spawnSync(process.execPath, ["--v8-pool-size=1", runner, join(dir, "state.bin"), join(dir, "script.sh")], {
      encoding: "utf8",
      timeout: 300_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout.trim().split("\n").pop()!) as { status: number; output: string };
    expect(result.output).toContain("RESULT ok");
    expect(result.output).toMatch(/count 0x0*[1-9]/);
  });
});
