/**
 * Damaged VHDs are refused with the right kind, and a refused image is never written: the file is
 * byte-identical afterwards, even when opened read-write. The checker reports exactly the same.
 */
import * as fs from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MemoryFile, MemoryFileIo } from "../../io/fault-io.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { expectFileRefusedUnchanged, fuzzOpenRefusedOrReadable } from "../../testing/corrupt.js";
import { hasQemu, qemu, qemuIo, tempFiles } from "../../testing/qemu.js";
import { pattern, uuidCounter } from "../vdi/test-support.js";
import { vhdChecksum } from "./footer.js";
import { checkVhd } from "./vhd-check.js";
import { VhdImage, createVhd, openVhd } from "./vhd-image.js";

const MiB = 1 << 20;
const opener = new NodeFileOpener();
const file = tempFiles("vstor-vhd-bad-");

/** A 16 MiB dynamic image with data in blocks 0, 2, 4, 6 (2 MiB blocks), made by us or by qemu. */
async function goodImage(name: string, by: "us" | "qemu"): Promise<string> {
  const p = file(name);
  if (by === "qemu") {
    qemu("qemu-img", "create", "-f", "vpc", "-o", "subformat=dynamic", p, "16M");
    qemuIo(p, "vpc", ...[0, 2, 4, 6].map((b) => `write -P ${0x10 + b} ${2 * b}M 1M`));
  } else {
    const img = await createVhd(opener, p, { size: 16 * MiB });
    for (const b of [0, 2, 4, 6]) await img.write(2 * b * MiB, pattern(2 * b * MiB, MiB, b + 1));
    await img.close();
  }
  return p;
}

function patch(p: string, at: number, bytes: number[]): void {
  const fd = fs.openSync(p, "r+");
  fs.writeSync(fd, Uint8Array.from(bytes), 0, bytes.length, at);
  fs.closeSync(fd);
}
const be32 = (v: number): number[] => [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];

/** Change a u32 of a structure (footer at the end and its copy, or the header) and fix its checksum. */
function poke(p: string, which: "footer" | "header", field: number, value: number): void {
  const size = fs.statSync(p).size;
  const places = which === "footer" ? [0, size - 512] : [512];
  const len = which === "footer" ? 512 : 1024;
  const sumAt = which === "footer" ? 64 : 36;
  for (const at of places) {
    const b = new Uint8Array(fs.readFileSync(p).subarray(at, at + len));
    b.set(be32(value), field);
    b.set(be32(vhdChecksum(b, sumAt)), sumAt);
    patch(p, at, Array.from(b));
  }
}
const batEntry = (p: string, i: number): number => fs.readFileSync(p).readUInt32BE(1536 + 4 * i);

const damages: { name: string; kind: string; text: RegExp; damage: (p: string) => void }[] = [
  { name: "a footer without its cookie (the copy at 0 intact)", kind: "corrupt", text: /footer at the end .* is missing/, damage: (p) => patch(p, fs.statSync(p).size - 512, [0]) },
  {
    name: "no cookie anywhere",
    kind: "invalid-format",
    text: /not a VHD/,
    damage: (p) => {
      patch(p, fs.statSync(p).size - 512, [0]);
      patch(p, 0, [0]);
    },
  },
  { name: "a footer with a bad checksum", kind: "corrupt", text: /footer checksum/, damage: (p) => patch(p, fs.statSync(p).size - 512 + 200, [0x77]) },
  { name: "a dynamic header with a bad checksum", kind: "corrupt", text: /dynamic header checksum/, damage: (p) => patch(p, 512 + 900, [0x77]) },
  { name: "a dynamic header without its cookie", kind: "corrupt", text: /cxsparse/, damage: (p) => patch(p, 512, [0]) },
  { name: "a block size that is not a power of two", kind: "corrupt", text: /block size 3145728 is not a power of two/, damage: (p) => poke(p, "header", 32, 3 * MiB) },
  { name: "an unknown disk type", kind: "unsupported", text: /disk type 7/, damage: (p) => poke(p, "footer", 60, 7) },
  { name: "another footer version", kind: "unsupported", text: /footer version 0x20000/, damage: (p) => poke(p, "footer", 12, 0x20000) },
  { name: "a header offset past the end", kind: "corrupt", text: /dynamic header offset/, damage: (p) => poke(p, "footer", 20, 0x7fff0000) },
  { name: "a block table too small for the size", kind: "corrupt", text: /cannot hold the disk size/, damage: (p) => poke(p, "header", 28, 2) },
  { name: "a block table past the end of the file", kind: "corrupt", text: /truncated: the block table ends/, damage: (p) => poke(p, "header", 20, 0x7fff0000) },
  { name: "a BAT entry past the end of the file", kind: "corrupt", text: /entry 3 points at sector 1048576, .*past the end/, damage: (p) => patch(p, 1536 + 12, be32(0x100000)) },
  { name: "a BAT entry inside the metadata", kind: "corrupt", text: /entry 3 points at sector 2 .*inside the image's metadata/, damage: (p) => patch(p, 1536 + 12, be32(2)) },
  { name: "two BAT entries for one block", kind: "corrupt", text: /entries \d and \d overlap/, damage: (p) => patch(p, 1536 + 4, be32(batEntry(p, 0))) },
  { name: "BAT entries whose blocks overlap", kind: "corrupt", text: /overlap/, damage: (p) => patch(p, 1536 + 4, be32(batEntry(p, 0) + 8)) },
  { name: "a file cut inside the last block", kind: "corrupt", text: /footer at the end .* is missing/, damage: (p) => fs.truncateSync(p, fs.statSync(p).size - 4096) },
  { name: "a file cut before the first 512 bytes", kind: "invalid-format", text: /too small/, damage: (p) => fs.truncateSync(p, 300) },
];

for (const by of ["us", "qemu"] as const) {
  describe.skipIf(by === "qemu" && !hasQemu)(`damaged VHDs (made by ${by})`, () => {
    for (const [i, d] of damages.entries()) {
      it(`refuses ${d.name} (${d.kind}), checkVhd says the same, and the file stays as it was`, async () => {
        const p = await goodImage(`${by}-${i}.vhd`, by);
        const good = await openVhd(opener, p, { readOnly: true });
        await good.close();
        d.damage(p);
        await expectFileRefusedUnchanged(p, (readOnly) => openVhd(opener, p, { readOnly }), d, async () => {
          const io = await opener.open(p, { readOnly: true });
          const report = await checkVhd(io);
          await io.close();
          expect(report.corruption?.kind).toBe(d.kind);
          expect(report.corruption?.message).toMatch(d.text);
        });
      });
    }
  });
}

describe("damaged VHDs in memory (fuzzed)", () => {
  it("any damage to footers, header or BAT: refused with a MediumError and nothing written, or opened and readable", async () => {
    const source = new MemoryFile();
    const img = await VhdImage.create(new MemoryFileIo(source, "/fuzz.vhd"), { size: 2 * MiB, blockSize: 64 * 1024, newUuid: uuidCounter(5), now: () => 1e12 });
    for (const b of [0, 3, 7, 30]) await img.write(b * 64 * 1024 + 1024, pattern(0, 8192, b + 1));
    await img.close();
    const original = source.bytes();
    const metaEnd = 2048; // footer copy, header, BAT
    const footerAt = original.length - 512;
    await fuzzOpenRefusedOrReadable({
      original,
      at: fc.oneof(fc.nat(metaEnd - 1), fc.integer({ min: footerAt, max: original.length - 1 })),
      name: "/fuzz.vhd",
      open: (io) => VhdImage.open(io),
      numRuns: 400,
    });
  });
});
