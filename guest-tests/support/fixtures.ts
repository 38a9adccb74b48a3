/**
 * Guest-side helpers for the adapter fixture (devices/test-fixture): find it in sysfs, parse
 * what the guest says about it.
 */
import { FIXTURE_DEVICE, FIXTURE_VENDOR } from "../../devices/test-fixture/fixture.js";

const hex = (n: number) => `0x${n.toString(16).padStart(4, "0")}`;

/** Prints one line per fixture: "FIXTURE <sysfs dir> <irq> <bar0 start> <bar1 start> <bar1 end>". */
export const LIST_FIXTURES = `
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor)" = "${hex(FIXTURE_VENDOR)}" ] && [ "$(cat $d/device)" = "${hex(FIXTURE_DEVICE)}" ] || continue
  set -- $(sed -n 1p $d/resource); b0=$1
  set -- $(sed -n 2p $d/resource); b1=$1; e1=$2
  echo "FIXTURE $d $(cat $d/irq) $b0 $b1 $e1 $(cat $d/class)"
done
`;

export interface GuestFixture {
  sysfs: string;
  irq: number;
  ioBase: number;
  mmioBase: number;
  mmioEnd: number;
  classCode: string;
}

export function parseFixtures(output: string): GuestFixture[] {
  return output
    .split("\n")
    .filter((l) => l.startsWith("FIXTURE "))
    .map((l) => {
      const [, sysfs, irq, b0, b1, e1, cls] = l.split(/\s+/);
      return { sysfs, irq: Number(irq), ioBase: Number(b0), mmioBase: Number(b1), mmioEnd: Number(e1), classCode: cls };
    });
}

/** Shell that prints the /proc/interrupts count for IRQ n (0 when the line is not listed). */
export const irqCount = (irq: number) =>
  `awk '$1 == "${irq}:" { print $2; f=1 } END { if (!f) print 0 }' /proc/interrupts`;

/** 32-bit port write/read through /dev/port with busybox dd (the port sees 4 byte accesses). */
export const portWrite32 = (port: number, value: number) => {
  const bytes = [0, 1, 2, 3].map((i) => `\\${((value >>> (8 * i)) & 0xff).toString(8).padStart(3, "0")}`).join("");
  return `printf '${bytes}' | dd of=/dev/port bs=1 seek=${port} count=4 conv=notrunc 2>/dev/null`;
};
export const portRead32 = (port: number) =>
  `dd if=/dev/port bs=1 skip=${port} count=4 2>/dev/null | hexdump -v -e '1/4 "%08x\\n"'`;

import type { Host } from "../../host-adapter/host.js";
import { TestFixture } from "../../devices/test-fixture/fixture.js";

/**
 * Two fixtures whose INTA pins land on the same PIRQ (slots 3 and 7: (pin-1 + slot-1) & 3 = 2),
 * so SeaBIOS routes both to IRQ 11: the wired-OR case.
 */
export function addSharedLineFixtures(host: Host): [TestFixture, TestFixture] {
  return [new TestFixture(host, "a", { slot: 3 }), new TestFixture(host, "b", { slot: 7 })];
}
