/**
 * Interop with qemu-img / qemu-io (Debian qemu-utils 7.2) on real files, both ways: images we
 * make pass `qemu-img check` and compare equal to what we wrote; images qemu makes (every
 * subformat, written across grain and extent boundaries, streamOptimized from convert, a
 * 3-level chain) read byte for byte here, and stay valid for qemu after we write them.
 */
import * as fs from "node:fs";
import { describe, expect, it } from "vitest";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { expectQemuCheckClean, expectQemuSees as qemuSees, hasQemu, qemu, qemuInfo, qemuIo, qemuTool, tempFiles } from "../../testing/qemu.js";
import { nodeDeflate, nodeInflate } from "./node/zlib.js";
import { FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NL_TEST, GD_AT_END, MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT, serializeMarker, serializeSparseHeader, type SparseHeader } from "./sparse-header.js";
import { createVmdk, parentLinkOf, type VmdkVariant } from "./vmdk-create.js";
import type { VmdkImage } from "./vmdk-image.js";
import { openVmdk, openVmdkChain } from "./vmdk-open.js";

const MiB = 1 << 20;
const GiB = 1024 * MiB;
const opener = new NodeFileOpener();
const file = tempFiles("vstor-vmdk-");
const expectCheckPasses = (p: string) => expectQemuCheckClean(p, "vmdk");
/** qemu-img compare against a sparse raw file of `size` bytes holding `pieces`, zeros elsewhere. */
const expectQemuSees = (p: string, size: number, pieces: [number, Uint8Array][]) => qemuSees(p, "vmdk", { size, pieces });

/** Check with qemu-io that [at, at+len) holds `byte` everywhere. */
function expectQemuPattern(p: string, at: number, len: number, byte: number): void {
  const r = qemuTool("qemu-io", "-f", "vmdk", "-r", "-c", `read -P ${byte} ${at} ${len}`, p);
  expect(r.out).not.toMatch(/Pattern verification failed|error|failed/i);
}

function bytes(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = ((i >>> 9) * 7 + i * 13 + seed * 31) & 0xff || seed;
  return out;
}

async function readAt(img: VmdkImage, at: number, len: number): Promise<Uint8Array> {
  const out = new Uint8Array(len);
  await img.read(at, out);
  return out;
}

/** Byte equality without vitest's element-by-element deep compare (slow on MiBs). */
function expectSame(got: Uint8Array, want: Uint8Array): void {
  expect(got.length).toBe(want.length);
  expect(Buffer.compare(got, want)).toBe(0);
}

function filled(len: number, b: number): Uint8Array {
  return new Uint8Array(len).fill(b);
}

describe.skipIf(!hasQemu)("VMDK interop with qemu-img", () => {
  const variants: VmdkVariant[] = ["monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "vmfs"];
  for (const variant of variants) {
    it(`a ${variant} image we create passes qemu-img check and compares equal through qemu`, async () => {
      const p = file(`ours-${variant}.vmdk`);
      const size = 24 * MiB;
      const img = await createVmdk(opener, p, { size, variant, splitSize: 8 * MiB });
      const writes: [number, Uint8Array][] = [
        [0, bytes(32 * 1024, 1)],
        [64 * 1024 - 512, bytes(4096, 2)], // across a grain boundary
        [8 * MiB - 3 * 512, bytes(8192, 3)], // across an extent boundary
        [16 * MiB - 64 * 1024, bytes(128 * 1024, 4)],
        [size - 512, bytes(512, 5)],
      ];
      await Promise.all(writes.map(([at, d]) => img.write(at, d)));
      for (const [at, d] of writes) expectSame(await readAt(img, at, d.length), d);
      await img.close();
      const again = await openVmdk(opener, p);
      expect(again.readOnly).toBe(false);
      for (const [at, d] of writes) expectSame(await readAt(again, at, d.length), d);
      await again.close();
      expectCheckPasses(p);
      expectQemuSees(p, size, writes);
      const info = qemuInfo(p, "vmdk");
      expect(info["virtual-size"]).toBe(size);
      expect(info["format-specific"]?.data?.["create-type"]).toBe(variant);
      // The unclean-shutdown flag is cleared by a clean close.
      if (variant === "monolithicSparse") expect(fs.readFileSync(p)[72]).toBe(0);
    });
  }

  const qemuVariants = ["monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"];
  for (const sub of qemuVariants) {
    it(`reads a ${sub} image qemu made and wrote across grain and extent boundaries, and writes it qemu-compatibly`, async () => {
      const p = file(`qemu-${sub}.vmdk`);
      const size = 2 * GiB + 64 * MiB;
      qemu("qemu-img", "create", "-q", "-f", "vmdk", "-o", `subformat=${sub}`, p, String(size));
      qemuIo(
        p,
        "vmdk",
        "write -P 0xab 0 64k",
        "write -P 0xcd 65024 1024", // across the first grain boundary
        `write -P 0xef ${2 * GiB - 4096} 8192`, // across qemu's 2 GiB extent boundary
        `write -P 0x12 ${size - 512} 512`,
      );
      const ro = await openVmdk(opener, p, { readOnly: true });
      expect(ro.size).toBe(size);
      expectSame(await readAt(ro, 0, 65024), filled(65024, 0xab));
      expectSame(await readAt(ro, 65024, 1024), filled(1024, 0xcd));
      expectSame(await readAt(ro, 66048, 64 * 1024), filled(64 * 1024, 0));
      const around = await readAt(ro, 2 * GiB - 8192, 16384);
      expectSame(around, new Uint8Array([...filled(4096, 0), ...filled(8192, 0xef), ...filled(4096, 0)]));
      expectSame(await readAt(ro, size - 1024, 1024), new Uint8Array([...filled(512, 0), ...filled(512, 0x12)]));
      await ro.close();

      const rw = await openVmdk(opener, p);
      const cidBefore = rw.cid;
      await rw.write(2 * GiB - 512, filled(1024, 0x77));
      await rw.write(5 * MiB + 512, filled(512, 0x66));
      expect(rw.cid).not.toBe(cidBefore);
      await rw.close();
      expectCheckPasses(p);
      expectQemuPattern(p, 2 * GiB - 512, 1024, 0x77);
      expectQemuPattern(p, 2 * GiB - 4096, 3584, 0xef);
      expectQemuPattern(p, 5 * MiB + 512, 512, 0x66);
      expectQemuPattern(p, 5 * MiB, 512, 0);
      expectQemuPattern(p, 0, 64 * 1024 - 512, 0xab);
    }, 60_000);
  }

  it("reads a streamOptimized image qemu-img convert made (grain directory up front)", async () => {
    const raw = file("stream-src.raw");
    const size = 16 * MiB + 512 * 3;
    const content = new Uint8Array(size);
    content.set(bytes(3 * MiB, 7), 0);
    content.set(bytes(100 * 1024, 8), 9 * MiB + 512);
    content.set(filled(512, 0x5a), size - 512);
    fs.writeFileSync(raw, content);
    const p = file("qemu-stream.vmdk");
    qemu("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, p);
    const img = await openVmdk(opener, p, { inflate: nodeInflate });
    expect(img.readOnly).toBe(true);
    expect(img.createType).toBe("streamOptimized");
    const all = await readAt(img, 0, size);
    expect(Buffer.compare(all, content)).toBe(0);
    await img.close();

    const created = file("qemu-stream-created.vmdk");
    qemu("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", created, "8M");
    const empty = await openVmdk(opener, created, { inflate: nodeInflate });
    expectSame(await readAt(empty, 0, 8 * MiB), new Uint8Array(8 * MiB));
    await empty.close();
  });

  it("reads a VMware-style stream (grain directory at the end, footer, markers), which qemu reads the same", async () => {
    const size = 2 * MiB;
    const content = new Uint8Array(size);
    content.set(bytes(70 * 1024, 9), 3 * 512);
    content.set(filled(512, 0x33), size - 512);
    const p = file("vmware-stream.vmdk");
    fs.writeFileSync(p, vmwareStream(content));
    const img = await openVmdk(opener, p, { inflate: nodeInflate });
    expect(Buffer.compare(await readAt(img, 0, size), content)).toBe(0);
    await img.close();
    expectQemuSees(p, size, [[0, content]]);
  });

  it("reads a 3-level chain qemu-img made (-b parent -F vmdk)", async () => {
    const base = file("chain-base.vmdk");
    const mid = file("chain-mid.vmdk");
    const top = file("chain-top.vmdk");
    qemu("qemu-img", "create", "-q", "-f", "vmdk", base, "32M");
    qemuIo(base, "vmdk", "write -P 0x11 0 1M", "write -P 0x12 10M 64k");
    qemu("qemu-img", "create", "-q", "-f", "vmdk", "-b", base, "-F", "vmdk", mid);
    qemuIo(mid, "vmdk", "write -P 0x21 512k 4k", "write -P 0x22 20M 1M");
    qemu("qemu-img", "create", "-q", "-f", "vmdk", "-b", mid, "-F", "vmdk", top);
    qemuIo(top, "vmdk", "write -P 0x31 600k 2k", "write -z 10M 4k");
    const rawOut = file("chain.raw");
    qemu("qemu-img", "convert", "-f", "vmdk", "-O", "raw", top, rawOut);
    const expected = new Uint8Array(fs.readFileSync(rawOut));
    const chain = await openVmdkChain(opener, top, { readOnly: true });
    expect(chain.layers.length).toBe(3);
    const got = new Uint8Array(chain.size);
    await chain.read(0, got);
    expect(Buffer.compare(got, expected)).toBe(0);
    await chain.close();

    // Written through our chain, the top stays valid and reads as we wrote for qemu.
    const rw = await openVmdkChain(opener, top);
    await rw.write(512 * 1024 + 1024, filled(1024, 0x44)); // partial grain: the rest comes from below
    await rw.close();
    expectCheckPasses(top);
    expected.set(filled(1024, 0x44), 512 * 1024 + 1024);
    expectQemuSees(top, expected.length, [[0, expected]]);
  });

  it("a differencing image we create is followed by qemu to its parent", async () => {
    const base = file("ours-base.vmdk");
    const child = file("ours-child.vmdk");
    const b = await createVmdk(opener, base, { size: 8 * MiB });
    await b.write(0, filled(2 * MiB, 0x61));
    await b.close();
    const bro = await openVmdk(opener, base, { readOnly: true });
    const c = await createVmdk(opener, child, { size: 8 * MiB, parent: parentLinkOf(bro, "ours-base.vmdk") });
    await bro.close();
    await c.close();
    const chain = await openVmdkChain(opener, child);
    await chain.write(MiB - 512, filled(1024, 0x62));
    await chain.close();
    expectCheckPasses(child);
    const expected = filled(2 * MiB, 0x61);
    expected.fill(0x62, MiB - 512, MiB + 512);
    expectQemuSees(child, 8 * MiB, [[0, expected]]);
  });
});

/** A stream laid out as VMware writes it: grains, then GT markers + tables, GD marker + directory, footer, EOS. */
function vmwareStream(content: Uint8Array): Uint8Array {
  const grainSize = 128;
  const gb = grainSize * 512;
  const capacity = content.length / 512;
  const grains = Math.ceil(capacity / grainSize);
  const gtCount = Math.ceil(grains / 512);
  const header = (gdOffset: number): SparseHeader => ({
    version: 3, flags: FLAG_NL_TEST | FLAG_COMPRESSED | FLAG_MARKERS, capacity, grainSize, descriptorOffset: 1, descriptorSize: 20,
    numGTEsPerGT: 512, rgdOffset: 0, gdOffset, overHead: 128, uncleanShutdown: false, compressAlgorithm: 1,
  });
  const out: Uint8Array[] = [];
  let sector = 0;
  const push = (b: Uint8Array) => {
    const padded = new Uint8Array(Math.ceil(b.length / 512) * 512);
    padded.set(b);
    out.push(padded);
    const at = sector;
    sector += padded.length / 512;
    return at;
  };
  push(serializeSparseHeader(header(GD_AT_END)));
  const desc = `# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="streamOptimized"\n\n# Extent description\nRW ${capacity} SPARSE "vmware-stream.vmdk"\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = "4"\n`;
  const descBytes = new Uint8Array(20 * 512);
  descBytes.set(Buffer.from(desc, "latin1"));
  push(descBytes);
  push(new Uint8Array((128 - sector) * 512));
  const gte = new Uint32Array(gtCount * 512);
  for (let g = 0; g < grains; g++) {
    const data = content.subarray(g * gb, (g + 1) * gb);
    if (data.every((x) => x === 0)) continue;
    const z = nodeDeflate(data);
    const m = new Uint8Array(12 + z.length);
    const v = new DataView(m.buffer);
    v.setUint32(0, g * grainSize, true);
    v.setUint32(8, z.length, true);
    m.set(z, 12);
    gte[g] = push(m);
  }
  const gd = new Uint32Array(gtCount);
  for (let t = 0; t < gtCount; t++) {
    push(serializeMarker(MARKER_GT, 4));
    gd[t] = push(new Uint8Array(gte.buffer, t * 2048, 2048).slice());
  }
  push(serializeMarker(MARKER_GD, Math.ceil((gtCount * 4) / 512)));
  const gdAt = push(new Uint8Array(gd.buffer).slice());
  push(serializeMarker(MARKER_FOOTER, 1));
  push(serializeSparseHeader(header(gdAt)));
  push(serializeMarker(MARKER_EOS, 0));
  return Buffer.concat(out);
}
