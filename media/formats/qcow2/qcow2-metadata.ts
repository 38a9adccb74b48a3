/**
 * Reading and validating a qcow2 file's metadata: every check an open makes, nothing written.
 * Shared by the open and the checker so both refuse exactly the same files.
 *
 * Refused as "corrupt": tables cut short by or pointing past the end of the file, offsets not
 * aligned to clusters, metadata clusters that overlap each other (header, L1, refcount table and
 * blocks, L2 tables, snapshot table), data clusters inside metadata.
 */
import { MediumError } from "../../block.js";
import type { FileIo } from "../../io/file-io.js";
import { readFully } from "../vdi/vdi-store.js";
import { HEADER_PROBE, clusterSize, parseHeader, type Qcow2Header } from "./header.js";
import { Qcow2Store, parseOffsets, readTable } from "./qcow2-store.js";
import { readL2 } from "./tables.js";

export interface Qcow2Metadata {
  store: Qcow2Store;
  fileSize: number;
}

/** Read the header cluster (or what the file has of it) and parse it. */
export async function readQcow2Header(file: FileIo, fileSize: number): Promise<Qcow2Header> {
  const probe = new Uint8Array(Math.min(fileSize, HEADER_PROBE));
  await readFully(file, 0, probe);
  // The cluster size first, so the whole header cluster (extensions, backing name) is read once.
  const bits = probe.length >= 24 ? new DataView(probe.buffer).getUint32(20) : 0;
  const cs = 2 ** Math.min(Math.max(bits, 9), 21);
  const head = new Uint8Array(Math.min(fileSize, cs));
  const n = await readFully(file, 0, head);
  return parseHeader(head.subarray(0, n), { path: file.path });
}

class Claims {
  private readonly owner = new Map<number, string>();
  constructor(
    private readonly cs: number,
    private readonly path: string,
  ) {}
  claim(offset: number, bytes: number, what: string): void {
    for (let c = offset / this.cs; c < Math.ceil((offset + bytes) / this.cs); c++) {
      const other = this.owner.get(c);
      if (other !== undefined) {
        throw new MediumError("corrupt", `qcow2 ${what} overlaps the ${other} at ${c * this.cs}`, { path: this.path, offset: c * this.cs });
      }
      this.owner.set(c, what);
    }
  }
  has(cluster: number): string | undefined {
    return this.owner.get(cluster);
  }
}

export async function readQcow2Metadata(file: FileIo): Promise<Qcow2Metadata> {
  const path = file.path;
  const fileSize = await file.size();
  const h = await readQcow2Header(file, fileSize);
  const cs = clusterSize(h);
  const claims = new Claims(cs, path);
  claims.claim(0, cs, "header");
  // L1 table: qemu writes only its entries, so the file may end inside its last cluster.
  const l1Bytes = h.l1Size * 8;
  if (h.l1Size > 0 && h.l1TableOffset + l1Bytes > fileSize) {
    throw new MediumError("corrupt", `qcow2 L1 table (${l1Bytes} bytes at ${h.l1TableOffset}) runs past the end of the file (${fileSize})`, { path, offset: 40 });
  }
  if (h.l1Size > 0) claims.claim(h.l1TableOffset, l1Bytes, "L1 table");
  const rtBytes = h.refcountTableClusters * cs;
  if (h.refcountTableOffset + rtBytes > fileSize) {
    throw new MediumError("corrupt", `qcow2 refcount table (${rtBytes} bytes at ${h.refcountTableOffset}) runs past the end of the file (${fileSize})`, { path, offset: 48 });
  }
  claims.claim(h.refcountTableOffset, rtBytes, "refcount table");
  if (h.nbSnapshots > 0) {
    if (h.snapshotsOffset === 0 || h.snapshotsOffset >= fileSize) {
      throw new MediumError("corrupt", `qcow2 snapshot table at ${h.snapshotsOffset} is outside the file`, { path, offset: 64 });
    }
    claims.claim(h.snapshotsOffset, 1, "snapshot table");
  }
  const l1Raw = h.l1Size > 0 ? await readTable(file, h.l1TableOffset, l1Bytes, "L1 table") : new Uint8Array(0);
  const l1 = parseOffsets(l1Raw, h.l1Size, cs, fileSize, "L1 table", { path, offset: h.l1TableOffset }, true);
  const rtRaw = await readTable(file, h.refcountTableOffset, rtBytes, "refcount table");
  const reftable = parseOffsets(rtRaw, rtBytes / 8, cs, fileSize, "refcount table", { path, offset: h.refcountTableOffset }, false);
  for (let i = 0; i < reftable.length; i++) if (reftable[i]) claims.claim(reftable[i]!, cs, `refcount block ${i}`);
  for (let i = 0; i < l1.length; i++) if (l1[i]) claims.claim(l1[i]!, cs, `L2 table ${i}`);

  // Highest cluster in use decides where new clusters go; the file's end too (never overwrite what is there).
  let end = Math.ceil(fileSize / cs) * cs;
  const store = new Qcow2Store(file, h, l1, reftable, end);
  const loads: Promise<void>[] = [];
  for (let i = 0; i < reftable.length; i++) {
    const at = reftable[i]!;
    if (!at) continue;
    loads.push(readTable(file, at, cs, `refcount block ${i}`).then((b) => void store.refBlocks.set(i, new DataView(b.buffer))));
  }
  for (let i = 0; i < l1.length; i++) {
    const at = l1[i]!;
    if (!at) continue;
    loads.push(readTable(file, at, cs, `L2 table ${i}`).then((b) => void store.l2.set(i, new DataView(b.buffer))));
  }
  await Promise.all(loads);

  const zeroFlag = h.version === 3;
  for (const [li, table] of store.l2) {
    for (let j = 0; j < store.l2Entries; j++) {
      const m = readL2(table, j, h.clusterBits, zeroFlag);
      if (m.kind === "unallocated") continue;
      if (m.kind === "zero" && m.host === 0) continue;
      const where = { path, offset: store.l1[li]! + 8 * j };
      const index = li * store.l2Entries + j;
      if (!Number.isSafeInteger(m.host)) throw new MediumError("corrupt", `qcow2 cluster ${index} has an absurd offset`, where);
      if (m.kind === "compressed") {
        if (m.host >= fileSize) throw new MediumError("corrupt", `qcow2 compressed cluster ${index} at ${m.host} is past the end of the file (${fileSize})`, where);
        continue;
      }
      if (m.host % cs !== 0) throw new MediumError("corrupt", `qcow2 cluster ${index} at ${m.host} is not cluster-aligned`, where);
      if (m.host + cs > Math.ceil(fileSize / cs) * cs) {
        throw new MediumError("corrupt", `qcow2 cluster ${index} at ${m.host} is past the end of the file (${fileSize})`, where);
      }
      const meta = claims.has(m.host / cs);
      if (meta) throw new MediumError("corrupt", `qcow2 data cluster ${index} at ${m.host} overlaps the ${meta}`, where);
    }
  }
  // Clusters counted past the end of the file (reserved by a crashed writer) are not reused either.
  for (const [t, block] of store.refBlocks) {
    for (let i = store.perRefBlock - 1; i >= 0; i--) {
      if (getNonZero(block, i, h.refcountOrder)) {
        end = Math.max(end, (t * store.perRefBlock + i + 1) * cs);
        break;
      }
    }
  }
  store.end = end;
  return { store, fileSize };
}

function getNonZero(block: DataView, i: number, order: number): boolean {
  const bits = 1 << order;
  const bit = i * bits;
  const byte = Math.floor(bit / 8);
  if (bits < 8) return ((block.getUint8(byte) >> (bit % 8)) & ((1 << bits) - 1)) !== 0;
  for (let k = 0; k < bits / 8; k++) if (block.getUint8(byte + k) !== 0) return true;
  return false;
}
