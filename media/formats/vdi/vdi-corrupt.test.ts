/**
 * Damaged images are refused with the right kind, and a refused image is never written: the file
 * is byte-identical afterwards, even when opened read-write.
 */
import * as fs from "node:fs";
import fc from "fast-check";
import { describe, it } from "vitest";
import { MemoryFile, MemoryFileIo } from "../../io/fault-io.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { expectFileRefusedUnchanged, fuzzOpenRefusedOrReadable } from "../../testing/corrupt.js";
import { hasQemu, qemu, qemuIo, tempFiles } from "../../testing/qemu.js";
import { HEADER_READ_SIZE, parseHeader } from "./header.js";
import { pattern, uuidCounter } from "./test-support.js";
import { VdiImage, createVdi, openVdi } from "./vdi-image.js";

const MiB = 1 << 20;
const opener = new NodeFileOpener();
const file = tempFiles("vstor-vdi-bad-");

/** A good image with four data blocks (slots 0..3 for blocks 0, 2, 4, 6), made by us or by qemu. */
async function goodImage(name: string, by: "us" | "qemu"): Promise<string> {
  const p = file(name);
  if (by === "qemu") {
    qemu("qemu-img", "create", "-f", "vdi", p, "16M");
    qemuIo(p, "vdi", ...[0, 2, 4, 6].map((b) => `write -P ${0x10 + b} ${b}M 1M`));
  } else {
    const img = await createVdi(opener, p, { size: 16 * MiB });
    for (const b of [0, 2, 4, 6]) await img.write(b * MiB, pattern(b * MiB, MiB, b + 1));
    await img.close();
  }
  return p;
}

function layout(p: string) {
  const bytes = new Uint8Array(fs.readFileSync(p));
  return { bytes, h: parseHeader(bytes.subarray(0, HEADER_READ_SIZE)) };
}

function poke32(p: string, at: number, value: number): void {
  const fd = fs.openSync(p, "r+");
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  fs.writeSync(fd, b, 0, 4, at);
  fs.closeSync(fd);
}

const damages: { name: string; kind: string; text: RegExp; damage: (p: string) => void }[] = [
  { name: "a flipped signature byte", kind: "invalid-format", text: /signature/, damage: (p) => poke32(p, 0x40, 0xbeda10ff) },
  { name: "an unknown version", kind: "unsupported", text: /version 2\.1/, damage: (p) => poke32(p, 0x44, 0x00020001) },
  { name: "a block size that is not a power of two", kind: "corrupt", text: /block size 1048577/, damage: (p) => poke32(p, 0x178, MiB + 1) },
  { name: "a data offset inside the map", kind: "corrupt", text: /data offset 0x4/, damage: (p) => poke32(p, 0x158, 4) },
  { name: "a block count that does not match the size", kind: "corrupt", text: /block count 17/, damage: (p) => poke32(p, 0x180, 17) },
  {
    name: "a map entry past the last allocated block",
    kind: "corrupt",
    text: /entry 6 is 9, not below blocks allocated \(4\)/,
    damage: (p) => poke32(p, layout(p).h.blockMapOffset + 4 * 6, 9),
  },
  {
    name: "a map entry pointing past the end of the file",
    kind: "corrupt",
    text: /entry 6 is 7, .*past the end of the file/,
    damage: (p) => {
      poke32(p, 0x184, 8); // blocks allocated 8: slot 7 is legal by the header but not in the file
      poke32(p, layout(p).h.blockMapOffset + 4 * 6, 7);
    },
  },
  {
    name: "two map entries for one data block",
    kind: "corrupt",
    text: /entries 0 and 1 both point at data block 0/,
    damage: (p) => poke32(p, layout(p).h.blockMapOffset + 4 * 1, 0),
  },
  {
    name: "a file truncated inside the last data block",
    kind: "corrupt",
    text: /past the end of the file/,
    damage: (p) => fs.truncateSync(p, fs.statSync(p).size - 512),
  },
  {
    name: "a file truncated inside the block map",
    kind: "corrupt",
    text: /truncated: the block map ends at/,
    damage: (p) => fs.truncateSync(p, layout(p).h.blockMapOffset + 8),
  },
  { name: "a file truncated inside the header", kind: "corrupt", text: /truncated VDI header/, damage: (p) => fs.truncateSync(p, 300) },
  { name: "a file cut before the signature", kind: "invalid-format", text: /too small/, damage: (p) => fs.truncateSync(p, 50) },
];

for (const by of ["us", "qemu"] as const) {
  describe.skipIf(by === "qemu" && !hasQemu)(`damaged images (made by ${by})`, () => {
    for (const [i, d] of damages.entries()) {
      it(`refuses ${d.name} (${d.kind}) and leaves the file as it was`, async () => {
        const p = await goodImage(`${by}-${i}.vdi`, by);
        const good = await openVdi(opener, p, { readOnly: true });
        await good.close();
        d.damage(p);
        await expectFileRefusedUnchanged(p, (readOnly) => openVdi(opener, p, { readOnly }), d);
      });
    }
  });
}

describe("damaged images in memory (fuzzed)", () => {
  it("any damage to header or map: refused with a MediumError and nothing written, or opened and readable", async () => {
    const source = new MemoryFile();
    const img = await VdiImage.create(new MemoryFileIo(source, "/fuzz.vdi"), { size: 2 * MiB, blockSize: 64 * 1024, dataAlign: 512, newUuid: uuidCounter(5) });
    for (const b of [0, 3, 7, 30]) await img.write(b * 64 * 1024, pattern(0, 64 * 1024, b + 1));
    await img.close();
    const original = source.bytes();
    const metaEnd = img.header.dataOffset;
    await fuzzOpenRefusedOrReadable({ original, at: fc.nat(metaEnd - 1), name: "/fuzz.vdi", open: (io) => VdiImage.open(io), numRuns: 400 });
  });
});
