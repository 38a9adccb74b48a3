/**
 * Opening, creating and inspecting media by file or UUID, with the registry's identity rules:
 * what the `vstor` medium verbs and the machine layer use. Formats are detected by content,
 * never by file extension.
 */
import { randomUUID } from "node:crypto";
import { statSync } from "node:fs";
import { MediumError, type BlockBackend } from "./block.js";
import { ImageChain, openChain, type LayeredImage } from "./chain.js";
import type { FileOpener } from "./io/file-io.js";
import { NodeFileOpener } from "./io/node/node-file-io.js";
import { createRaw, openRaw } from "./formats/raw/raw.js";
import { VDI_SIGNATURE, VdiImageType } from "./formats/vdi/header.js";
import { createVdi, openVdi, type VdiImage } from "./formats/vdi/vdi-image.js";
import { canonicalLocation, MediaRegistry, type MediumRecord } from "./registry.js";

export type MediumFormat = "VDI" | "RAW";
export type MediumVariant = "Standard" | "Fixed" | "Diff";

export interface MediumInfo {
  uuid: string;
  location: string;
  format: MediumFormat;
  variant: MediumVariant;
  /** Virtual size in bytes. */
  size: number;
  /** Bytes the file takes on the host. */
  fileSize: number;
  parentUuid?: string;
  children: string[];
  modifyUuid?: string;
}

export interface CreateMediumOptions {
  path: string;
  format?: MediumFormat;
  /** Bytes; a differencing image takes its parent's. */
  size?: number;
  variant?: "Standard" | "Fixed";
  /** UUID or path of the parent, for a differencing image. */
  parent?: string;
}

const VDI_SIGNATURE_OFFSET = 0x40;

export class MediumManager {
  constructor(
    readonly registry = new MediaRegistry(),
    readonly opener: FileOpener = new NodeFileOpener(),
  ) {}

  /** Detect a file's format from its content. */
  async detectFormat(path: string): Promise<MediumFormat> {
    const f = await this.opener.open(path, { readOnly: true });
    try {
      const head = new Uint8Array(512);
      const n = await f.read(0, head);
      const sig = n >= VDI_SIGNATURE_OFFSET + 4 ? new DataView(head.buffer).getUint32(VDI_SIGNATURE_OFFSET, true) : 0;
      if (sig === VDI_SIGNATURE) return "VDI";
      if (n >= 40 && new TextDecoder().decode(head.subarray(0, 40)).startsWith("<<< ") && head.subarray(0, 40).includes(0x56)) {
        // A VDI pre-header whose signature is damaged: never fall back to raw for it.
        throw new MediumError("corrupt", "looks like a VDI image (pre-header text) but its signature is wrong", { path });
      }
      return "RAW";
    } finally {
      await f.close();
    }
  }

  async create(o: CreateMediumOptions): Promise<MediumInfo> {
    const format = o.format ?? "VDI";
    if (o.parent) {
      if (format !== "VDI") throw new MediumError("unsupported", `differencing images are VDI here, not ${format}`, { path: o.path });
      const parentRec = this.requireRecord(o.parent);
      const parent = await this.openLayer(parentRec.location, true);
      try {
        const child = await createVdi(this.opener, o.path, {
          size: parent.size,
          parent: { uuid: parent.uuid, modifyUuid: parent.modifyUuid },
        });
        await child.close();
      } finally {
        await parent.close();
      }
    } else {
      if (!o.size || o.size % 512) throw new MediumError("out-of-bounds", `size ${o.size} must be a positive multiple of 512`, { path: o.path });
      if (format === "VDI") {
        const img = await createVdi(this.opener, o.path, { size: o.size, variant: o.variant === "Fixed" ? "fixed" : "dynamic" });
        await img.close();
      } else {
        const img = await createRaw(this.opener, o.path, o.size, { preallocate: o.variant === "Fixed" });
        await img.close();
      }
    }
    return this.register(o.path);
  }

  /** Add an existing image to the registry (refused if its UUID is known elsewhere). */
  async register(path: string): Promise<MediumInfo> {
    const format = await this.detectFormat(path);
    if (format === "RAW") {
      const known = this.registry.findByLocation(path);
      const rec = known ?? this.registry.register({ uuid: randomUUID(), location: path, format, deviceType: "hdd" });
      return this.describe(rec);
    }
    const img = await this.openLayer(path, true);
    try {
      this.registry.checkIdentity(img.uuid, path);
      const rec = this.registry.register({
        uuid: img.uuid,
        location: path,
        format,
        deviceType: "hdd",
        parentUuid: img.parentUuid ?? undefined,
      });
      return this.describe(rec);
    } finally {
      await img.close();
    }
  }

  requireRecord(uuidOrPath: string): MediumRecord {
    const rec = this.registry.find(uuidOrPath);
    if (!rec) throw new MediumError("not-found", `no medium '${uuidOrPath}' is registered`, { path: uuidOrPath });
    return rec;
  }

  private async openLayer(path: string, readOnly: boolean): Promise<VdiImage> {
    return openVdi(this.opener, path, { readOnly });
  }

  /**
   * Open a medium for I/O: a raw image, a VDI, or a differencing VDI with its parents (found by
   * UUID in the registry, opened read-only). Identity is checked before anything is written.
   */
  async open(uuidOrPath: string, options: { readOnly?: boolean } = {}): Promise<BlockBackend> {
    const path = this.registry.find(uuidOrPath)?.location ?? uuidOrPath;
    const format = await this.detectFormat(path);
    if (format === "RAW") return openRaw(this.opener, path, { readOnly: options.readOnly });
    const top = await this.openLayer(path, !!options.readOnly);
    try {
      this.registry.checkIdentity(top.uuid, path);
      if (top.parentUuid === null) return top;
      return await openChain(top, (uuid) => this.openParent(uuid), { readOnly: options.readOnly });
    } catch (e) {
      await top.close().catch(() => undefined);
      throw e;
    }
  }

  private async openParent(uuid: string): Promise<LayeredImage> {
    const rec = this.registry.findByUuid(uuid);
    if (!rec) throw new MediumError("not-found", `parent {${uuid}} is not registered`);
    const img = await this.openLayer(rec.location, true);
    if (img.uuid !== uuid) {
      await img.close();
      throw new MediumError("corrupt", `${rec.location} is registered as {${uuid}} but carries {${img.uuid}}`, { path: rec.location });
    }
    return img;
  }

  async info(uuidOrPath: string): Promise<MediumInfo> {
    return this.describe(this.requireRecord(uuidOrPath));
  }

  private async describe(rec: MediumRecord): Promise<MediumInfo> {
    const fileSize = statSync(rec.location).size;
    const children = this.registry.children(rec.uuid).map((c) => c.uuid);
    if (rec.format === "RAW") {
      return { uuid: rec.uuid, location: rec.location, format: "RAW", variant: "Fixed", size: fileSize, fileSize, children };
    }
    const img = await this.openLayer(rec.location, true);
    try {
      const variant: MediumVariant = img.type === VdiImageType.fixed ? "Fixed" : img.isDifferencing ? "Diff" : "Standard";
      return {
        uuid: img.uuid,
        location: canonicalLocation(rec.location),
        format: "VDI",
        variant,
        size: img.size,
        fileSize,
        parentUuid: img.parentUuid ?? undefined,
        children,
        modifyUuid: img.modifyUuid,
      };
    } finally {
      await img.close();
    }
  }

  /** Forget a medium (refused while it has children); optionally delete its file. */
  async close(uuidOrPath: string, options: { delete?: boolean } = {}): Promise<MediumRecord> {
    const rec = this.requireRecord(uuidOrPath);
    this.registry.unregister(rec.uuid);
    if (options.delete) await this.opener.remove(rec.location);
    return rec;
  }

  async resize(uuidOrPath: string, size: number): Promise<void> {
    const rec = this.requireRecord(uuidOrPath);
    if (rec.format !== "VDI") throw new MediumError("unsupported", "resize is implemented for VDI images", { path: rec.location });
    const img = await this.openLayer(rec.location, false);
    try {
      await img.resize(size);
      await img.flush();
    } finally {
      await img.close();
    }
  }

  async compact(uuidOrPath: string): Promise<void> {
    const rec = this.requireRecord(uuidOrPath);
    if (rec.format !== "VDI") throw new MediumError("unsupported", "compact is implemented for VDI images", { path: rec.location });
    const img = await this.openLayer(rec.location, false);
    try {
      await img.compact();
      await img.flush();
    } finally {
      await img.close();
    }
  }
}
