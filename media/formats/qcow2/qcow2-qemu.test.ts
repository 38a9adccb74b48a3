/**
 * Interop with qemu-img / qemu-io 7.2 on real files: images we make (base and differencing) pass
 * `qemu-img check` with no errors or leaks and compare equal to what we wrote; images qemu makes
 * (written by qemu-io, with a backing file, compressed by `convert -c`, with zero clusters, with
 * other refcount widths) read byte for byte here and stay valid for qemu after we write them.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { MediumError } from "../../block.js";
import { ImageChain } from "../../chain.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { expectQemuCheckClean, expectQemuSees as qemuSees, hasQemu, qemu, qemuInfo, qemuIo, qemuJson, qemuRaw as qemuRawAs, tempFiles } from "../../testing/qemu.js";
import { firstDiff, pattern } from "../vdi/test-support.js";
import { nodeInflate } from "./node/inflate.js";
import { createQcow2, openQcow2, type Qcow2CreateOptions } from "./qcow2-image.js";

const MiB = 1 << 20;
const opener = new NodeFileOpener();
const file = tempFiles("vstor-qcow2-");
const expectCheckClean = (p: string) => expectQemuCheckClean(p, "qcow2");
const expectQemuSees = (p: string, model: Uint8Array) => qemuSees(p, "qcow2", model);
/** The disk as qemu reads it (following backing files). */
const qemuRaw = (p: string) => qemuRawAs(p, "qcow2");

async function readAll(b: { size: number; read(o: number, buf: Uint8Array): Promise<void> }): Promise<Uint8Array> {
  const out = new Uint8Array(b.size);
  await b.read(0, out);
  return out;
}

type Writable = { size: number; write(o: number, d: Uint8Array): Promise<void> };

/** Writes of every shape: whole clusters, partial ones, across cluster and L2 boundaries, zeros over data, the last sector. */
async function writeSome(img: Writable, model: Uint8Array, cs: number, tag = 1): Promise<void> {
  const writes: [number, Uint8Array][] = [
    [0, pattern(0, MiB, tag)],
    [5 * MiB + 512, pattern(5 * MiB + 512, 3072, tag + 1)],
    [Math.max(3 * cs, 3 * 65536) - 4096, pattern(Math.max(3 * cs, 3 * 65536) - 4096, 8192, tag + 2)],
    [9 * cs - 512, pattern(9 * cs - 512, 2 * cs + 1024, tag + 3)],
    [img.size - 512, pattern(0, 512, tag + 4)],
  ];
  await Promise.all(writes.map(([at, data]) => img.write(at, data)));
  for (const [at, data] of writes) model.set(data, at);
  await img.write(4096, new Uint8Array(8192));
  model.fill(0, 4096, 4096 + 8192);
}

/** Open a qcow2 and its backing chain by file name, as an integrator would. */
async function openChainByName(p: string, readOnly = false): Promise<ImageChain> {
  const layers = [];
  let img = await openQcow2(opener, p, { readOnly, inflate: nodeInflate });
  layers.push(img);
  while (img.backingFile) {
    const parent = await openQcow2(opener, path.resolve(path.dirname(img.path), img.backingFile), { readOnly: true, inflate: nodeInflate });
    img.attachBacking(parent);
    layers.push(parent);
    img = parent;
  }
  return new ImageChain(layers, { readOnly });
}

describe.skipIf(!hasQemu)("qcow2 interop with qemu-img", () => {
  const shapes: [string, Omit<Qcow2CreateOptions, "size">][] = [
    ["v3, 64 KiB clusters", {}],
    ["v2, 64 KiB clusters", { version: 2 }],
    ["v3, 512-byte clusters", { clusterSize: 512 }],
    ["v3, 2 MiB clusters", { clusterSize: 2 * MiB }],
  ];
  for (const [label, options] of shapes) {
    it(`a ${label} image we create passes qemu-img check (no leaks) and compares equal`, async () => {
      const p = file(`ours-${label.replace(/\W+/g, "-")}.qcow2`);
      const img = await createQcow2(opener, p, { size: 24 * MiB, ...options });
      const model = new Uint8Array(img.size);
      await writeSome(img, model, img.clusterSize);
      await img.discard(16 * MiB, 2 * MiB);
      model.fill(0, 16 * MiB, 18 * MiB);
      await img.close();
      expectCheckClean(p);
      const info = qemuInfo(p);
      expect(info.format).toBe("qcow2");
      expect(info["virtual-size"]).toBe(24 * MiB);
      expect(info["cluster-size"]).toBe(img.clusterSize);
      expect(info["format-specific"].data.compat).toBe(options.version === 2 ? "0.10" : "1.1");
      expectQemuSees(p, model);
    });
  }

  it("grows the refcount table (512-byte clusters, 12 MiB of data) and qemu-img check stays clean", async () => {
    const p = file("grow.qcow2");
    const img = await createQcow2(opener, p, { size: 16 * MiB, clusterSize: 512 });
    const model = new Uint8Array(img.size);
    for (let at = 0; at < 12 * MiB; at += MiB) {
      await img.write(at, pattern(at, MiB, 70));
      model.set(pattern(at, MiB, 70), at);
      if (at === 4 * MiB) await img.flush(); // a flush in between: the table moves after tables were written
    }
    expect(img.header.refcountTableClusters).toBeGreaterThan(1);
    await img.close();
    expectCheckClean(p);
    expectQemuSees(p, model);
  });

  it("a differencing image we create over our base: qemu follows the backing file and checks it clean", async () => {
    const base = file("ours-base.qcow2");
    const top = file("ours-top.qcow2");
    const b = await createQcow2(opener, base, { size: 16 * MiB });
    const model = new Uint8Array(16 * MiB);
    await b.write(0, pattern(0, 16 * MiB, 7));
    model.set(pattern(0, 16 * MiB, 7));
    await b.close();
    const c = await createQcow2(opener, top, { size: 16 * MiB, backing: { file: "ours-base.qcow2", format: "qcow2" } });
    await c.close();
    const chain = await openChainByName(top);
    // Partial clusters: copy-on-write from the base; whole zero clusters hide it (zero flag).
    await writeSome(chain, model, 64 * 1024, 20);
    await chain.write(2 * MiB, new Uint8Array(128 * 1024));
    model.fill(0, 2 * MiB, 2 * MiB + 128 * 1024);
    await chain.close();
    expectCheckClean(top);
    const info = qemuInfo(top);
    expect(info["backing-filename"]).toBe("ours-base.qcow2");
    expect(info["backing-filename-format"]).toBe("qcow2");
    expectQemuSees(top, model);
    expect(firstDiff(qemuRaw(base), pattern(0, 16 * MiB, 7))).toBe(-1);
  });

  for (const compat of ["1.1", "0.10"]) {
    it(`reads an image qemu made (compat ${compat}) and wrote across cluster boundaries, then writes it qemu-compatibly`, async () => {
      const p = file(`qemu-${compat}.qcow2`);
      qemu("qemu-img", "create", "-f", "qcow2", "-o", `compat=${compat}`, p, "32M");
      qemuIo(p, "qcow2", "write -P 0xab 1020k 8k", "write -P 0xcd 5M 3k", "write -P 0x5a 32764k 4k");
      const model = new Uint8Array(32 * MiB);
      model.fill(0xab, 1020 * 1024, 1028 * 1024);
      model.fill(0xcd, 5 * MiB, 5 * MiB + 3072);
      model.fill(0x5a, 32764 * 1024, 32 * MiB);
      const ro = await openQcow2(opener, p, { readOnly: true });
      expect(ro.version).toBe(compat === "1.1" ? 3 : 2);
      expect(firstDiff(await readAll(ro), model)).toBe(-1);
      await ro.close();
      const rw = await openQcow2(opener, p);
      await writeSome(rw, model, rw.clusterSize, 30);
      await rw.close();
      expectCheckClean(p);
      expectQemuSees(p, model);
    });
  }

  it("reads qemu's chain (a child with a backing file, zero clusters) byte for byte, and writes through it", async () => {
    const base = file("q-base.qcow2");
    const top = file("q-top.qcow2");
    qemu("qemu-img", "create", "-f", "qcow2", base, "16M");
    qemuIo(base, "qcow2", "write -P 0x11 0 4M", "write -P 0x22 8M 1M");
    qemu("qemu-img", "create", "-f", "qcow2", "-b", "q-base.qcow2", "-F", "qcow2", top);
    qemuIo(top, "qcow2", "write -P 0x33 1M 4k", "write -z 2M 128k", "write -P 0x44 8388096 1024");
    const chain = await openChainByName(top);
    expect((chain.top as unknown as { backingFormat: string }).backingFormat).toBe("qcow2");
    const want = qemuRaw(top);
    expect(firstDiff(await readAll(chain), want)).toBe(-1);
    expect(want[2 * MiB]).toBe(0); // the zero cluster hides the base
    const model = want.slice();
    await writeSome(chain, model, 64 * 1024, 40);
    await chain.close();
    expectCheckClean(top);
    expectQemuSees(top, model);
  });

  it("reads a compressed image (qemu-img convert -c) byte for byte, and rewrites compressed clusters qemu-compatibly", async () => {
    const raw = file("src.raw");
    const model = new Uint8Array(8 * MiB);
    for (let i = 0; i < model.length; i += 4096) model.set(pattern(i, 1024, 3), i); // compressible, not trivial
    model.set(pattern(0, MiB, 9), 3 * MiB); // some less compressible data
    fs.writeFileSync(raw, model);
    const p = file("compressed.qcow2");
    qemu("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw, p);
    const map = qemuJson<{ data: boolean; offset?: number }[]>("map", p);
    expect(map.some((e) => e.data && e.offset === undefined)).toBe(true); // compressed extents have no offset
    const ro = await openQcow2(opener, p, { readOnly: true, inflate: nodeInflate });
    expect(firstDiff(await readAll(ro), model)).toBe(-1);
    await ro.close();
    const noInflate = await openQcow2(opener, p, { readOnly: true });
    await expect(noInflate.read(0, new Uint8Array(512))).rejects.toMatchObject({ kind: "unsupported" });
    await noInflate.close();
    const rw = await openQcow2(opener, p, { inflate: nodeInflate });
    await writeSome(rw, model, rw.clusterSize, 50);
    await rw.close();
    expectCheckClean(p);
    expectQemuSees(p, model);
  });

  for (const bits of [1, 8, 64]) {
    it(`writes an image qemu made with ${bits}-bit refcounts and qemu-img check stays clean`, async () => {
      const p = file(`refbits-${bits}.qcow2`);
      qemu("qemu-img", "create", "-f", "qcow2", "-o", `refcount_bits=${bits},cluster_size=4096`, p, "64M");
      const img = await openQcow2(opener, p);
      const model = new Uint8Array(64 * MiB);
      await writeSome(img, model, 4096, 60);
      await img.write(40 * MiB, pattern(0, 20 * MiB, 61)); // beyond what one refcount block counts at 1 bit
      model.set(pattern(0, 20 * MiB, 61), 40 * MiB);
      await img.close();
      expectCheckClean(p);
      expectQemuSees(p, model);
    });
  }

  it("reads the active state of an image with an internal snapshot, and refuses to write it", async () => {
    const p = file("snap.qcow2");
    qemu("qemu-img", "create", "-f", "qcow2", p, "8M");
    qemuIo(p, "qcow2", "write -P 0x01 0 1M");
    qemu("qemu-img", "snapshot", "-c", "s1", p);
    qemuIo(p, "qcow2", "write -P 0x02 0 64k");
    const before = fs.readFileSync(p);
    await expect(openQcow2(opener, p)).rejects.toMatchObject({ kind: "unsupported" });
    expect(fs.readFileSync(p).equals(before)).toBe(true);
    const ro = await openQcow2(opener, p, { readOnly: true });
    expect(firstDiff(await readAll(ro), qemuRaw(p))).toBe(-1);
    await ro.close();
  });

  it("refuses read-write an image marked dirty (lazy refcounts), reads it read-only", async () => {
    const p = file("dirty.qcow2");
    qemu("qemu-img", "create", "-f", "qcow2", "-o", "lazy_refcounts=on", p, "8M");
    const bytes = fs.readFileSync(p);
    bytes[79] |= 1; // incompatible features: dirty
    fs.writeFileSync(p, bytes);
    const err = await openQcow2(opener, p).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MediumError);
    expect((err as MediumError).kind).toBe("unsupported");
    expect(fs.readFileSync(p).equals(bytes)).toBe(true);
    await (await openQcow2(opener, p, { readOnly: true })).close();
  });
});

/**
 * Requests of many clusters (joined into runs, request-plan.ts) against qemu: qemu-img check is
 * clean and the disk compares equal after each step. 4 KiB clusters: an L2 table maps 2 MiB.
 */
describe.skipIf(!hasQemu)("qcow2 requests of many clusters, with qemu-img", () => {
  const K = 1024;

  it("writes over stored and new clusters, partial ends, across L2 tables, zeros among data", async () => {
    const p = file("runs.qcow2");
    const img = await createQcow2(opener, p, { size: 8 * MiB, clusterSize: 4096 });
    const model = new Uint8Array(img.size);
    const zerosInside = pattern(5 * MiB, 64 * K, 5);
    zerosInside.fill(0, 8 * K, 24 * K);
    const steps: [number, Uint8Array][] = [
      [64 * K, pattern(64 * K, 64 * K, 1)], // 16 new clusters
      [2 * MiB - 20 * K, pattern(2 * MiB - 20 * K, 40 * K, 2)], // across the first L2 boundary
      [32 * K + 512, pattern(32 * K + 512, 200 * K, 3)], // partial ends; new, stored, new
      [5 * MiB, zerosInside], // four whole clusters of zeros: not stored
      [2 * MiB - 100 * K, pattern(0, 3 * MiB, 4)], // stored, new, stored, across the second boundary (4 MiB)
      [5 * MiB + 4 * K, new Uint8Array(24 * K)], // zeros over stored data (written in place) and over nothing
      [0, pattern(0, 8 * MiB, 6)], // everything, mostly in place
    ];
    for (const [i, [at, data]] of steps.entries()) {
      await img.write(at, data);
      model.set(data, at);
      await img.flush();
      expectCheckClean(p);
      expectQemuSees(p, model);
      if (i === 3) expect(img.blockState((5 * MiB + 8 * K) / 4096)).toBe("unallocated");
    }
    expect(firstDiff(await readAll(img), model)).toBe(-1);
    await img.close();
    expectCheckClean(p);
  });

  it("reads qemu's scattered clusters (runs that follow each other on the host and ones that do not) byte for byte, then writes over them", async () => {
    const p = file("scattered.qcow2");
    qemu("qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=4096", p, "8M");
    // Written out of order, so neighbouring clusters land apart on the host.
    const writes = ["write -P 0x11 3M 1M", "write -P 0x22 0 512k", "write -P 0x33 2044k 8k", "write -P 0x44 1M 64k", "write -P 0x55 512k 4k", "write -P 0x66 1020k 8k", "write -z 1040k 16k", "write -P 0x77 4k 8k"];
    qemuIo(p, "qcow2", ...writes);
    type MapEntry = { start: number; length: number; data: boolean; zero: boolean; offset?: number };
    const map = qemuJson<MapEntry[]>("map", p);
    const apart = map.some((e, i) => e.data && map[i + 1]?.data && map[i + 1]!.start === e.start + e.length && map[i + 1]!.offset !== e.offset! + e.length);
    expect(apart).toBe(true); // neighbours in the disk, not on the host
    expect(map.some((e) => e.zero && e.offset !== undefined)).toBe(true); // a zero cluster with storage (write -z over data)
    const want = qemuRaw(p);
    const ro = await openQcow2(opener, p, { readOnly: true });
    expect(firstDiff(await readAll(ro), want)).toBe(-1);
    for (const [step, length] of [[300 * K + 512, 700 * K], [4 * K, 12 * K], [MiB - 512, 3 * MiB]]) {
      for (let at = 0; at + length <= want.length; at += step) {
        const buf = new Uint8Array(length);
        await ro.read(at, buf);
        expect(firstDiff(buf, want.subarray(at, at + length)), `read ${at}+${length}`).toBe(-1);
      }
    }
    await ro.close();
    const rw = await openQcow2(opener, p);
    const model = want.slice();
    for (const [at, length, tag] of [[512 * K - 2 * K, MiB + 4 * K, 1], [3 * MiB + 4 * K, 12 * K, 2], [1000 * K, 80 * K, 3] /* over the zero clusters with storage */, [2 * MiB - 64 * K, 3 * MiB, 4]]) {
      const data = pattern(at!, length!, tag);
      await rw.write(at!, data);
      model.set(data, at);
    }
    await rw.close();
    expectCheckClean(p);
    expectQemuSees(p, model);
  });

  it("with a backing file: whole clusters written alone in runs (zeros flagged to hide the base), partial ones through the chain", async () => {
    const base = file("runs-base.qcow2");
    const top = file("runs-top.qcow2");
    qemu("qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=4096", base, "8M");
    qemuIo(base, "qcow2", "write -P 0x11 0 8M");
    const img = await createQcow2(opener, top, { size: 8 * MiB, clusterSize: 4096, backing: { file: "runs-base.qcow2", format: "qcow2" } });
    const model = qemuRaw(base);
    const withZeros = pattern(MiB, 64 * K, 2);
    withZeros.fill(0, 16 * K, 32 * K);
    for (const [at, data] of [
      [0, pattern(0, 64 * K, 1)],
      [2 * MiB - 8 * K, pattern(2 * MiB - 8 * K, 16 * K, 3)], // across an L2 boundary
      [MiB, withZeros], // four zero clusters: zero flags, not the base's data
    ] as [number, Uint8Array][]) {
      await img.write(at, data);
      model.set(data, at);
    }
    expect(img.blockState(MiB / 4096 + 4)).toBe("zero");
    await img.close();
    expectCheckClean(top);
    expectQemuSees(top, model);
    const chain = await openChainByName(top);
    for (const [at, length, tag] of [[32 * K + 512, 64 * K, 4], [MiB + 12 * K, 24 * K, 5], [5 * MiB - 512, 9 * K, 6]]) {
      const data = pattern(at!, length!, tag);
      await chain.write(at!, data);
      model.set(data, at);
    }
    expect(firstDiff(await readAll(chain), model)).toBe(-1);
    await chain.close();
    expectCheckClean(top);
    expectQemuSees(top, model);
  });
});
