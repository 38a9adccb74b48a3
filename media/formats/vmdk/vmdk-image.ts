/**
 * A VMDK image (a descriptor and its extents) as a BlockBackend and a chain layer.
 *
 * - Opening validates everything and writes nothing. The first write of a session marks every
 *   sparse extent's unclean-shutdown flag, then gives the descriptor a new CID (the VMDK way of
 *   saying "content changed", which children check through their parentCID); a clean close
 *   clears the flag again.
 * - Chain identity: `modifyUuid` is derived from the CID and `parentModifyUuid` from parentCID,
 *   so media/chain.ts's parent-modified check is exactly VMDK's CID check. `uuid` is
 *   ddb.uuid.image; files without one (qemu writes none) get a random one in memory, written
 *   to the descriptor with the first session, as VirtualBox adds the ddb.uuid keys.
 * - A chain block is one grain, so a differencing image's sparse extents must be grain aligned.
 * - Discard is a hint we ignore (VirtualBox's VMDK backend has none either).
 */
import { nameBeside } from "../paths.js";
import { MediumError, checkRequest, type Extent } from "../../block.js";
import type { BlockState, FillBelow, LayeredImage, ParentLink } from "../../chain.js";
import { Gate } from "../async-lock.js";
import { NULL_UUID, isNullUuid, isUuid, randomUuid } from "../uuid.js";
import { NO_PARENT_CID, hex8, type VmdkDescriptor } from "./descriptor.js";
import type { GrainFill, VmdkExtent } from "./extents.js";
import { asMediumError } from "./util.js";

/** Where the descriptor text is written back. */
export interface DescriptorStore {
  /** Null when the image has no place for it (a bare sparse extent opened on its own). */
  write(text: string): Promise<void>;
  close(): Promise<void>;
}

export interface VmdkImageParts {
  path: string;
  descriptor: VmdkDescriptor;
  store: DescriptorStore;
  extents: VmdkExtent[];
  readOnly: boolean;
  newUuid?: () => string;
  newCid?: () => number;
}

/** The UUID standing for a CID in chain bookkeeping. */
export function cidUuid(cid: number): string {
  return `${hex8(cid)}-0000-0000-0000-000000000000`;
}

function randomCid(): number {
  const u = randomUuid();
  return parseInt(u.slice(0, 8), 16) >>> 0;
}

const zeroFill: GrainFill = async () => undefined;

export class VmdkImage implements LayeredImage {
  readonly sectorSize = 512;
  readonly discardZeroes = false;
  readonly path: string;
  readonly readOnly: boolean;
  readonly size: number;
  readonly blockSize: number;
  readonly descriptor: VmdkDescriptor;
  readonly extents: readonly VmdkExtent[];
  /** Start of each extent in the virtual disk, bytes. */
  private readonly starts: number[];
  private readonly store: DescriptorStore;
  private readonly gate = new Gate();
  private readonly unstoredWrites = new Map<number, Promise<unknown>>();
  /** Writes not settled yet: flush and close wait for them (a write may still wait for its session). */
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly newCid: () => number;
  private session: Promise<void> | null = null;
  private closed = false;
  private imageUuid: string;
  /** The image UUID was made up at open (the descriptor has none). */
  private uuidMadeUp: boolean;
  /** Parent UUID learnt from the opened parent when the descriptor names none. */
  private boundParent: string | null = null;

  constructor(parts: VmdkImageParts) {
    this.path = parts.path;
    this.descriptor = parts.descriptor;
    this.store = parts.store;
    this.extents = parts.extents;
    this.newCid = parts.newCid ?? randomCid;
    this.readOnly = parts.readOnly || parts.extents.every((e) => !e.writable);
    this.starts = [];
    let at = 0;
    for (const e of parts.extents) {
      this.starts.push(at);
      at += e.size;
    }
    this.size = at;
    const grains = parts.extents.filter((e) => e.grainBytes > 0).map((e) => e.grainBytes);
    let bs = grains.length ? Math.min(...grains) : 64 * 1024;
    for (const s of this.starts) while (bs > 512 && s % bs !== 0) bs /= 2;
    this.blockSize = bs;
    if (this.hasParent && grains.some((g) => g !== bs)) {
      throw new MediumError("unsupported", "a differencing VMDK whose extents are not grain aligned is not supported", { path: this.path });
    }
    const u = parts.descriptor.uuid("image");
    this.uuidMadeUp = !(u && isUuid(u) && !isNullUuid(u));
    this.imageUuid = this.uuidMadeUp ? (parts.newUuid ?? randomUuid)() : u!;
  }

  // --- identity -------------------------------------------------------------------------------

  get createType(): string {
    return this.descriptor.createType;
  }
  get hasParent(): boolean {
    return this.descriptor.parentCid !== null;
  }
  get uuid(): string {
    return this.imageUuid;
  }
  get cid(): number {
    return this.descriptor.cid;
  }
  get modifyUuid(): string {
    return cidUuid(this.descriptor.cid);
  }
  get parentUuid(): string | null {
    const pc = this.descriptor.parentCid;
    if (pc === null) return null;
    const u = this.descriptor.uuid("parent");
    if (u && isUuid(u) && !isNullUuid(u)) return u;
    // No UUID link (qemu): a stand-in until the parent found by parentFileNameHint is bound.
    return this.boundParent ?? `${hex8(pc)}-0000-0000-0000-ffffffffffff`;
  }
  get parentModifyUuid(): string | null {
    const pc = this.descriptor.parentCid;
    return pc === null ? null : cidUuid(pc);
  }
  get parentFileNameHint(): string | undefined {
    return this.descriptor.parentFileNameHint;
  }

  /** Take `parent` as the parent when the descriptor has no ddb.uuid.parent (in memory only). */
  bindParent(parent: LayeredImage): void {
    const u = this.descriptor.uuid("parent");
    if (!(u && isUuid(u) && !isNullUuid(u))) this.boundParent = parent.uuid;
  }

  async setParent(link: ParentLink | null): Promise<void> {
    await this.changeDescriptor((d) => {
      if (link === null) {
        d.parentCid = null;
        d.delete("parentFileNameHint");
        if (d.uuid("parent") !== undefined) d.setUuid("parent", NULL_UUID);
        if (d.uuid("parentmodification") !== undefined) d.setUuid("parentmodification", NULL_UUID);
        this.boundParent = null;
        return;
      }
      if (!isUuid(link.uuid) || !isUuid(link.modifyUuid)) throw new MediumError("unsupported", "not a usable parent link", { path: this.path });
      d.parentCid = parseInt(link.modifyUuid.slice(0, 8), 16) >>> 0;
      d.setUuid("parent", link.uuid);
      d.setUuid("parentmodification", link.modifyUuid);
      if (link.path) d.set("parentFileNameHint", nameBeside(this.path, link.path));
    });
  }

  /** Repair: another ddb.uuid.image (the CID stays, so children still see their parent unmodified). */
  async setUuid(uuid: string): Promise<void> {
    if (!isUuid(uuid) || isNullUuid(uuid)) throw new MediumError("unsupported", `${JSON.stringify(uuid)} is not a usable UUID`, { path: this.path });
    await this.changeDescriptor((d) => d.setUuid("image", uuid));
    this.imageUuid = uuid;
    this.uuidMadeUp = false;
  }

  /** Repair: change only ddb.uuid.parent of a differencing image (parentCID and the file hint stay). */
  async setParentUuid(uuid: string): Promise<void> {
    if (!this.hasParent) throw new MediumError("unsupported", "not a differencing image", { path: this.path });
    if (!isUuid(uuid) || isNullUuid(uuid)) throw new MediumError("unsupported", `${JSON.stringify(uuid)} is not a usable UUID`, { path: this.path });
    await this.changeDescriptor((d) => d.setUuid("parent", uuid));
    this.boundParent = null;
  }

  /** Point parentFileNameHint at another file (relative to this image's folder). */
  setParentFileNameHint(hint: string): Promise<void> {
    return this.changeDescriptor((d) => d.set("parentFileNameHint", hint));
  }

  private async changeDescriptor(edit: (d: VmdkDescriptor) => void): Promise<void> {
    this.checkWritable();
    await this.gate.runExclusive(async () => {
      edit(this.descriptor);
      try {
        await this.store.write(this.descriptor.toString());
      } catch (e) {
        throw asMediumError(e, this.path, "descriptor write");
      }
    });
  }

  // --- BlockBackend -----------------------------------------------------------------------------

  private checkOpen(): void {
    if (this.closed) throw new MediumError("closed", "image is closed", { path: this.path });
  }

  private checkWritable(): void {
    this.checkOpen();
    if (this.readOnly) throw new MediumError("read-only", "image is opened read-only", { path: this.path });
  }

  /** Unclean flag on, then a new CID (and the ddb.uuid keys VirtualBox keeps) in the descriptor. */
  private beginSession(): Promise<void> {
    if (!this.session) {
      this.session = (async () => {
        const d = this.descriptor;
        const oldCid = d.cid;
        try {
          for (const e of this.extents) if (e.writable) await e.beginSession();
          let cid = this.newCid() >>> 0;
          while (cid === oldCid || cid === NO_PARENT_CID) cid = (cid + 1) >>> 0;
          d.cid = cid;
          if (this.uuidMadeUp) {
            d.setUuid("image", this.imageUuid);
            this.uuidMadeUp = false;
          }
          if (this.boundParent && d.uuid("parent") === undefined) d.setUuid("parent", this.boundParent);
          if (d.uuid("modification") !== undefined) d.setUuid("modification", randomUuid());
          await this.store.write(d.toString());
        } catch (e) {
          d.cid = oldCid;
          this.session = null;
          throw asMediumError(e, this.path, "session start");
        }
      })();
    }
    return this.session;
  }

  /** The extent holding virtual byte `abs`, and the offset inside it. */
  private locate(abs: number): { e: VmdkExtent; local: number } {
    let i = this.starts.length - 1;
    while (i > 0 && this.starts[i]! > abs) i--;
    return { e: this.extents[i]!, local: abs - this.starts[i]! };
  }

  /** Split [offset, offset+length) into pieces inside one extent (an extent splits grains itself). */
  private pieces(offset: number, length: number): { e: VmdkExtent; local: number; at: number; n: number }[] {
    const out: { e: VmdkExtent; local: number; at: number; n: number }[] = [];
    for (let done = 0; done < length; ) {
      const { e, local } = this.locate(offset + done);
      const n = Math.min(e.size - local, length - done);
      out.push({ e, local, at: done, n });
      done += n;
    }
    return out;
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    this.checkOpen();
    checkRequest(this, offset, buf.length, this.path);
    if (this.unstoredWrites.size > 0) {
      const waits: Promise<unknown>[] = [];
      const bs = this.blockSize;
      for (let b = Math.floor(offset / bs); b * bs < offset + buf.length; b++) {
        const p = this.unstoredWrites.get(b);
        if (p) waits.push(p);
      }
      if (waits.length) await Promise.allSettled(waits);
    }
    await this.gate.runShared(() => Promise.all(this.pieces(offset, buf.length).map((p) => p.e.read(p.local, buf.subarray(p.at, p.at + p.n)))));
  }

  pendingWrite(index: number): Promise<unknown> | undefined {
    return this.unstoredWrites.get(index);
  }

  /** Remember `job` for the blocks it touches that are not stored yet, so later reads wait for it. */
  private track<T>(first: number, last: number, job: Promise<T>): Promise<T> {
    const watched: number[] = [];
    for (let b = first; b <= last; b++) {
      if (this.blockState(b) !== "data") {
        this.unstoredWrites.set(b, job);
        watched.push(b);
      }
    }
    this.inflight.add(job);
    const done = () => this.inflight.delete(job);
    job.then(done, done);
    if (watched.length === 0) return job;
    const forget = () => {
      for (const b of watched) if (this.unstoredWrites.get(b) === job) this.unstoredWrites.delete(b);
    };
    job.then(forget, forget);
    return job;
  }

  async write(offset: number, buf: Uint8Array): Promise<void> {
    this.checkWritable();
    checkRequest(this, offset, buf.length, this.path);
    if (buf.length === 0) return;
    const bs = this.blockSize;
    const job = (async () => {
      await this.beginSession();
      await this.gate.runShared(() =>
        Promise.all(this.pieces(offset, buf.length).map((p) => p.e.write(p.local, buf.subarray(p.at, p.at + p.n), zeroFill, this.hasParent))),
      );
    })();
    await this.track(Math.floor(offset / bs), Math.floor((offset + buf.length - 1) / bs), job);
  }

  async flush(): Promise<void> {
    this.checkOpen();
    if (this.readOnly) return;
    if (this.inflight.size) await Promise.allSettled([...this.inflight]);
    await Promise.all(this.extents.map((e) => e.flush()));
  }

  async discard(offset: number, length: number): Promise<void> {
    this.checkWritable();
    checkRequest(this, offset, length, this.path);
  }

  async allocatedExtents(): Promise<Extent[]> {
    this.checkOpen();
    const out: Extent[] = [];
    this.extents.forEach((e, i) => {
      for (const r of e.stored()) {
        const offset = this.starts[i]! + r.offset;
        const prev = out[out.length - 1];
        if (prev && prev.state === r.state && prev.offset + prev.length === offset) prev.length += r.length;
        else out.push({ offset, length: r.length, state: r.state });
      }
    });
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (this.inflight.size) await Promise.allSettled([...this.inflight]);
    await this.gate.runExclusive(async () => {
      this.closed = true;
      try {
        if (!this.readOnly && this.session) {
          await this.session.catch(() => undefined);
          for (const e of this.extents) if (e.writable) await e.endSession();
          await Promise.all(this.extents.map((e) => e.flush()));
        }
      } finally {
        const results = await Promise.allSettled([...this.extents.map((e) => e.close()), this.store.close()]);
        const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
        if (failed) throw asMediumError(failed.reason, this.path, "close");
      }
    });
  }

  // --- chain layer ------------------------------------------------------------------------------

  blockState(index: number): BlockState {
    const abs = index * this.blockSize;
    if (index < 0 || abs >= this.size) return "unallocated";
    const { e, local } = this.locate(abs);
    return e.state(local);
  }

  async readBlockPart(index: number, offsetInBlock: number, buf: Uint8Array): Promise<void> {
    this.checkOpen();
    const abs = index * this.blockSize + offsetInBlock;
    if (this.blockState(index) !== "data") throw new MediumError("corrupt", `block ${index} is not stored in this image`, { path: this.path });
    await this.gate.runShared(() => Promise.all(this.pieces(abs, buf.length).map((p) => p.e.read(p.local, buf.subarray(p.at, p.at + p.n)))));
  }

  async writeBlockPart(index: number, offsetInBlock: number, data: Uint8Array, fillBelow: FillBelow): Promise<void> {
    this.checkWritable();
    const bs = this.blockSize;
    if (index * bs + offsetInBlock + data.length > this.size || offsetInBlock + data.length > bs) {
      throw new MediumError("out-of-bounds", `write of ${data.length} bytes at block ${index}+${offsetInBlock} is outside the image`, { path: this.path });
    }
    const abs = index * bs + offsetInBlock;
    const job = (async () => {
      await this.beginSession();
      await this.gate.runShared(() =>
        Promise.all(this.pieces(abs, data.length).map((p) => p.e.write(p.local, data.subarray(p.at, p.at + p.n), fillBelow, this.hasParent))),
      );
    })();
    await this.track(index, index, job);
  }
}
