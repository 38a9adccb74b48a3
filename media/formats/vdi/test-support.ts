/**
 * Helpers shared by the VDI and chain tests (not used by the backend): deterministic UUIDs,
 * byte patterns, and memory files that remember what was flushed, to simulate a crash that
 * loses unflushed writes.
 */
import { FaultControl, HeldFileIo, MemoryFile, MemoryFileIo } from "../../io/fault-io.js";
import { VdiImage, type VdiCreateOptions } from "./vdi-image.js";

/** UUIDs 00000001-0000-4000-8000-<seed><n>, in order: tests get the same UUIDs every run. */
export function uuidCounter(seed = 0): () => string {
  let n = 0;
  return () => {
    n++;
    const hex = n.toString(16).padStart(8, "0");
    return `${hex}-0000-4000-8000-${seed.toString(16).padStart(4, "0")}${hex}`;
  };
}

/** `length` bytes whose values depend on the absolute offset and a tag (so misplaced data shows). */
export function pattern(offset: number, length: number, tag = 1): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) {
    const p = offset + i;
    out[i] = ((p >>> 9) * 31 + (p & 0x1ff) + tag * 101) & 0xff || tag;
  }
  return out;
}

/** A copy of a memory file (its state at this moment). */
export function cloneMemoryFile(f: MemoryFile): MemoryFile {
  const c = new MemoryFile();
  c.size = f.size;
  for (const [k, v] of f.chunks) c.chunks.set(k, v.slice());
  return c;
}

/** A memory file and its bytes as of its last flush. */
export interface DurableFile {
  name: string;
  file: MemoryFile;
  durable: MemoryFile;
}

export function durableFile(name: string, file = new MemoryFile()): DurableFile {
  return { name, file, durable: cloneMemoryFile(file) };
}

/** A handle on a DurableFile: flush() copies the bytes to `durable` (what survives a power cut). */
export class DurableMemoryFileIo extends MemoryFileIo {
  constructor(
    readonly state: DurableFile,
    readOnly = false,
  ) {
    super(state.file, state.name, readOnly);
  }

  override async flush(): Promise<void> {
    await super.flush();
    this.state.durable = cloneMemoryFile(this.state.file);
  }
}

/** Index of the first byte where a and b differ (or where the shorter ends), -1 if equal. Fast on big arrays. */
export function firstDiff(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** True if every byte is zero (fast on big arrays). */
export function allZero(a: Uint8Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== 0) return false;
  return true;
}

/**
 * A few VDI images in memory, found by UUID like a media registry would, with one FaultControl
 * over all their files (to count requests or make them fail) and a way to "lose power".
 */
export class VdiShelf {
  readonly control = new FaultControl();
  /** uuid -> file */
  readonly files = new Map<string, DurableFile>();
  readonly newUuid: () => string;

  constructor(seed = 1) {
    this.newUuid = uuidCounter(seed);
  }

  async create(name: string, options: Omit<VdiCreateOptions, "newUuid">): Promise<VdiImage> {
    const state = durableFile(name);
    const img = await VdiImage.create(new HeldFileIo(new DurableMemoryFileIo(state), this.control), { ...options, newUuid: this.newUuid });
    this.files.set(img.uuid, state);
    return img;
  }

  /** Open the image with this UUID again (another handle on the same bytes). */
  async open(uuid: string, options: { readOnly?: boolean } = {}): Promise<VdiImage> {
    const state = this.files.get(uuid);
    if (!state) throw new Error(`no image {${uuid}} on the shelf`);
    const io = new HeldFileIo(new DurableMemoryFileIo(state, !!options.readOnly), this.control);
    return VdiImage.open(io, { readOnly: options.readOnly, newUuid: this.newUuid });
  }

  /** Bytes of the image file with this UUID. */
  bytes(uuid: string): Uint8Array {
    return this.files.get(uuid)!.file.bytes();
  }

  /**
   * A new shelf holding the files as a crash left them: every write that reached the file
   * ("kept"), or only what the last flush of each file made durable ("durable").
   */
  afterCrash(what: "kept" | "durable"): VdiShelf {
    const next = new VdiShelf(900);
    for (const [uuid, state] of this.files) {
      next.files.set(uuid, durableFile(state.name, cloneMemoryFile(what === "kept" ? state.file : state.durable)));
    }
    return next;
  }
}
