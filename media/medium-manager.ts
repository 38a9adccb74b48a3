/**
 * Opening, creating and inspecting media by file or UUID, with the registry's identity rules:
 * what the `vstor` medium verbs and the machine layer use. Formats are detected by content,
 * never by file extension.
 */
import { randomUUID } from "node:crypto";
import { statSync } from "node:fs";
import { basename, dirname, join, relative, resolve } from "node:path";
import { MediumError, type BlockBackend } from "./block.js";
import { ImageChain, openChain, type LayeredImage } from "./chain.js";
import { IMAGE_CREATORS, cloneToNew, copyMedium, creatableFormat, isCreatable, type CloneProgress, type ImageVariant } from "./clone.js";
import { cloneToStreamVmdk, emptyDisk } from "./stream-clone.js";
import { CHILD_CREATORS, childFormat } from "./differencing.js";
import type { FileOpener } from "./io/file-io.js";
import { NodeFileOpener } from "./io/node/node-file-io.js";
import type { VdiCheckReport } from "./formats/vdi/vdi-check.js";
import {
  asLayer,
  bindParent,
  detectFormat,
  FORMATS,
  linksByUuid,
  openLayer,
  parentFileOf,
  storesUuid,
  type MediumFormat,
  type MediumVariant,
} from "./formats.js";
import type { MaintenanceProgress } from "./formats/vdi/vdi-maintenance.js";
import { canonicalLocation, duplicateUuid, MediaRegistry, type MediumRecord } from "./registry.js";
import { isZero } from "./bytes.js";
import { openIso } from "./formats/iso/iso.js";
import { checkMedium } from "./medium-check.js";
import { isAbsolutePath, nameBeside, resolveBeside } from "./formats/paths.js";
import { Qcow2Image } from "./formats/qcow2/qcow2-image.js";
import { VdiImage } from "./formats/vdi/vdi-image.js";
import { VhdImage } from "./formats/vhd/vhd-image.js";
import { VmdkImage } from "./formats/vmdk/index.js";
import { hasSparseMagic } from "./formats/vmdk/sparse-header.js";

export type { MediumFormat, MediumVariant } from "./formats.js";

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

export interface OpenMediumOptions {
  readOnly?: boolean;
  /** Parents (by UUID) to open read-write too: a merge writes into one and re-links another. */
  writableParents?: readonly string[];
  /** Open even if a parent changed after its child was linked (finishing an interrupted merge). */
  allowParentModified?: boolean;
}

export interface CreateMediumOptions {
  path: string;
  format?: MediumFormat;
  /** Bytes; a differencing image takes its parent's. */
  size?: number;
  /** ESX and Stream are VMDK variants (Stream: a new, empty stream image, read-only from then on). */
  variant?: ImageVariant | "Stream";
  /** VMDK: split into 2 GB pieces. */
  split?: boolean;
  /** UUID or path of the parent, for a differencing image. */
  parent?: string;
}

export interface CloneMediumOptions {
  /** Default: the source's format (as VBoxManage, for formats it can create). */
  format?: MediumFormat;
  /** Stream: a streamOptimized VMDK, written in one pass (read-only afterwards). */
  variant?: ImageVariant | "Stream";
  split?: boolean;
  /** Write into this existing medium (at least as large as the source), keeping its UUID. */
  existing?: boolean;
  onProgress?: CloneProgress;
}

/** One finding of `check`. Errors make the medium unusable; warnings do not. */
export interface CheckIssue {
  severity: "error" | "warning";
  /**
   * Errors: the MediumError kind the image (or its chain) is refused with. Warnings: a leak kind
   * ("unreferenced-slots", "unused-slots-at-end", "bytes-past-end"), "parent-modified",
   * "duplicate-uuid", "registry-mismatch" or "odd-size".
   */
  code: string;
  /** The file concerned: the medium's, or a parent's. */
  location: string;
  message: string;
  /** Leaked bytes (leak warnings only). */
  bytes?: number;
}

export interface MediumCheckReport {
  location: string;
  format: MediumFormat;
  /** Unknown when a VDI is too damaged to read, or an unregistered raw image. */
  uuid?: string;
  registered: boolean;
  variant?: MediumVariant;
  /** Virtual size in bytes, when known. */
  size?: number;
  fileSize: number;
  /** The images below a differencing one, parent first, as far as they were found. */
  chain: { uuid: string; location: string }[];
  /** True if any issue is an error (`vstor checkmedium` exits 2). */
  corrupt: boolean;
  /** Leaked bytes in this medium and its parents. */
  leakedBytes: number;
  issues: CheckIssue[];
  /** The VDI checker's reports: this image, then its parents. */
  vdi?: VdiCheckReport[];
}

/** What each maintenance operation works on; the image classes of these formats have the method. */
const MAINTAINABLE: Record<"resize" | "compact", readonly MediumFormat[]> = {
  resize: ["VDI", "VHD", "QCOW2", "RAW"],
  compact: ["VDI"],
};

type Maintainable = BlockBackend & {
  resize?(size: number, options: { onProgress?: MaintenanceProgress }): Promise<void>;
  compact?(options: { onProgress?: MaintenanceProgress }): Promise<void>;
};

/** Stream is a VMDK variant of one file. */
function streamTarget(format: MediumFormat, split: boolean | undefined, path: string): void {
  if (format !== "VMDK") throw new MediumError("unsupported", `Stream is a VMDK variant, not ${format}`, { path });
  if (split) throw new MediumError("unsupported", "a stream VMDK is one file: it cannot be split", { path });
}

export class MediumManager {
  constructor(
    readonly registry = new MediaRegistry(),
    readonly opener: FileOpener = new NodeFileOpener(),
  ) {}

  /** Detect a file's format from its content. */
  async detectFormat(path: string): Promise<MediumFormat> {
    return detectFormat(this.opener, path);
  }

  async create(o: CreateMediumOptions): Promise<MediumInfo> {
    if (o.parent) {
      const parentRec = this.requireRecord(o.parent);
      const parentFormat = parentRec.format as MediumFormat;
      const kind = childFormat(parentFormat, o.format, o.path);
      const parent = await openLayer(this.opener, parentRec.location, { readOnly: true, uuid: parentRec.uuid });
      try {
        const child = await CHILD_CREATORS[kind](this.opener, o.path, { image: parent, format: parentFormat, location: parentRec.location });
        await child.close();
      } finally {
        await parent.close();
      }
    } else {
      const format = o.format ?? "VDI";
      if (!o.size || o.size % 512) throw new MediumError("out-of-bounds", `size ${o.size} must be a positive multiple of 512`, { path: o.path });
      if (o.variant === "Stream") {
        streamTarget(format, o.split, o.path);
        await cloneToStreamVmdk(emptyDisk(o.size), this.opener, o.path);
      } else {
        const img = await IMAGE_CREATORS[creatableFormat(format, o.path)](this.opener, o.path, { size: o.size, variant: o.variant ?? "Standard", split: o.split });
        await img.close();
      }
    }
    return this.register(o.path);
  }

  /** Add an existing image to the registry (refused if its UUID is known elsewhere). */
  async register(path: string): Promise<MediumInfo> {
    const format = await this.detectFormat(path);
    const known = this.registry.findByLocation(path);
    // Formats that store no UUID (qcow2, Parallels, raw, qemu's VMDKs) keep the registry's.
    const img = await FORMATS[format].open(this.opener, path, { readOnly: true, uuid: known?.uuid ?? randomUUID() });
    try {
      const layer = asLayer(img);
      if (!layer || !storesUuid(img)) {
        if (known && known.format === format) return this.describe(known);
      } else {
        this.registry.checkIdentity(layer.uuid, path);
      }
      const rec = this.registry.register({
        uuid: layer?.uuid ?? known?.uuid ?? randomUUID(),
        location: path,
        format,
        deviceType: "hdd",
        parentUuid: layer ? this.registeredParentUuid(layer) : undefined,
      });
      return this.describe(rec);
    } finally {
      await img.close();
    }
  }

  /** A child's parent as the registry knows it: by the UUID it stores, else by the file it names. */
  private registeredParentUuid(layer: LayeredImage): string | undefined {
    if (layer.parentUuid === null) return undefined;
    if (linksByUuid(layer)) return layer.parentUuid;
    const file = parentFileOf(layer);
    return file ? this.registry.findByLocation(file)?.uuid : undefined;
  }

  requireRecord(uuidOrPath: string): MediumRecord {
    const rec = this.registry.find(uuidOrPath);
    if (!rec) throw new MediumError("not-found", `no medium '${uuidOrPath}' is registered`, { path: uuidOrPath });
    return rec;
  }

  /**
   * Open a medium of any format for I/O; a differencing image with its parents (opened
   * read-only): found by the UUID the child stores in the registry (VDI, VHD, VMDK's
   * ddb.uuid.parent), else by the file it names next to itself (VHD parent name, VMDK
   * parentFileNameHint, qcow2 backing file). Identity is checked before anything is written.
   */
  async open(uuidOrPath: string, options: OpenMediumOptions = {}): Promise<BlockBackend> {
    const rec = this.registry.find(uuidOrPath);
    const path = rec?.location ?? uuidOrPath;
    const format = await this.detectFormat(path);
    const uuid = (rec ?? this.registry.findByLocation(path))?.uuid;
    const img = await FORMATS[format].open(this.opener, path, { readOnly: !!options.readOnly, uuid });
    const top = asLayer(img);
    if (!top) return img;
    try {
      if (storesUuid(img)) this.registry.checkIdentity(top.uuid, path);
      if (top.parentUuid === null) return top;
      const writable = new Set((options.writableParents ?? []).map((u) => u.toLowerCase()));
      return await openChain(top, (puuid, child) => this.openParent(puuid, child, writable), {
        readOnly: options.readOnly,
        allowParentModified: options.allowParentModified,
      });
    } catch (e) {
      await top.close().catch(() => undefined);
      throw e;
    }
  }

  /** `writable`: parents to open read-write, by registered UUID (a child linked by file name only knows it once found). */
  private async openParent(uuid: string, child: LayeredImage, writable: ReadonlySet<string> = new Set()): Promise<LayeredImage> {
    const rec = linksByUuid(child) ? this.registry.findByUuid(uuid) : undefined;
    if (rec) {
      const img = await openLayer(this.opener, rec.location, { readOnly: !writable.has(rec.uuid), uuid: rec.uuid });
      if (img.uuid !== uuid) {
        await img.close();
        throw new MediumError("corrupt", `${rec.location} is registered as {${uuid}} but carries {${img.uuid}}`, { path: rec.location });
      }
      return img;
    }
    const file = parentFileOf(child);
    if (!file || !(await this.opener.exists(file))) {
      const named = file ? ` (nor is ${file}, the file it names, there)` : "";
      throw new MediumError("not-found", `parent {${uuid}} of ${child.path} is not registered${named}`, { path: child.path });
    }
    const known = this.registry.findByLocation(file)?.uuid;
    const img = await openLayer(this.opener, file, { readOnly: !(known && writable.has(known)), uuid: known });
    if (linksByUuid(child) && img.uuid !== uuid) {
      await img.close();
      throw new MediumError("not-found", `${child.path} names parent {${uuid}}, but ${file} carries {${img.uuid}}`, { path: child.path });
    }
    bindParent(child, img);
    return img;
  }

  async info(uuidOrPath: string): Promise<MediumInfo> {
    return this.describe(this.requireRecord(uuidOrPath));
  }

  private async describe(rec: MediumRecord): Promise<MediumInfo> {
    if (rec.deviceType !== "hdd") throw new MediumError("unsupported", `a ${rec.deviceType} image has no disk information`, { path: rec.location });
    const fileSize = await this.fileSize(rec.location);
    const children = this.registry.children(rec.uuid).map((c) => c.uuid);
    if (rec.format === "RAW") {
      return { uuid: rec.uuid, location: rec.location, format: "RAW", variant: "Fixed", size: fileSize, fileSize, children };
    }
    const format = rec.format as MediumFormat;
    const img = await FORMATS[format].open(this.opener, rec.location, { readOnly: true, uuid: rec.uuid });
    try {
      const layer = asLayer(img);
      const variant: MediumVariant = await FORMATS[format].variantOf(img);
      const parentUuid = layer ? (this.registeredParentUuid(layer) ?? rec.parentUuid) : undefined;
      return {
        uuid: layer?.uuid ?? rec.uuid,
        location: canonicalLocation(rec.location),
        format,
        variant,
        size: img.size,
        fileSize,
        ...(parentUuid ? { parentUuid } : {}),
        children,
        ...(layer ? { modifyUuid: layer.modifyUuid } : {}),
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

  /**
   * A medium with differencing children is frozen: changing it would change what they show (and
   * its new modification UUID would mark them "parent modified").
   */
  private refuseIfParent(rec: MediumRecord, what: string): void {
    const kids = this.registry.children(rec.uuid);
    if (kids.length) {
      throw new MediumError("in-use", `cannot be ${what}: it has differencing children (${kids.map((k) => k.location).join(", ")})`, {
        path: rec.location,
      });
    }
  }

  /**
   * Grow a medium (VDI, VHD, qcow2 and RAW can grow; shrinking is refused, as VirtualBox
   * refuses it). VMDK and Parallels images are refused clearly: clone into a bigger image instead.
   */
  async resize(uuidOrPath: string, size: number, options: { onProgress?: MaintenanceProgress } = {}): Promise<void> {
    await this.maintain(uuidOrPath, "resize", "resized", async (img) => {
      if (size < img.size) throw new MediumError("unsupported", `shrinking from ${img.size} to ${size} bytes would lose data; it is refused`, { path: uuidOrPath });
      await img.resize!(size, options);
    });
  }

  /** Give back zeroed, discarded and leaked space (VDI; other formats are refused clearly). */
  async compact(uuidOrPath: string, options: { onProgress?: MaintenanceProgress } = {}): Promise<void> {
    await this.maintain(uuidOrPath, "compact", "compacted", (img) => img.compact!(options));
  }

  /** Open a medium that has no children read-write, run one maintenance operation, flush. */
  private async maintain(uuidOrPath: string, op: "resize" | "compact", done: string, work: (img: Maintainable) => Promise<void>): Promise<void> {
    const rec = this.requireRecord(uuidOrPath);
    const format = rec.format as MediumFormat;
    if (!MAINTAINABLE[op].includes(format)) {
      const can = MAINTAINABLE[op].join(", ");
      throw new MediumError("unsupported", `${format} images cannot be ${done} here (${can} can${op === "resize" ? "; clone into a larger image instead" : ""})`, { path: rec.location });
    }
    this.refuseIfParent(rec, done);
    const img = (await FORMATS[format].open(this.opener, rec.location, { readOnly: false, uuid: rec.uuid })) as Maintainable;
    try {
      await work(img);
      await img.flush();
    } finally {
      await img.close();
    }
  }

  /**
   * Clone a medium (registered, or a file, opened by content) into a new image with a new UUID,
   * or with `existing` into an existing medium: what the guest sees, a differencing chain
   * flattened (clone.ts). Both end up registered, as VBoxManage's open registers them; a failure
   * leaves the registry as it was and removes a new image.
   */
  async clone(source: string, target: string, options: CloneMediumOptions = {}): Promise<MediumInfo> {
    const { existing, variant, split, onProgress } = options;
    if (existing && (options.format || variant || split)) throw new MediumError("unsupported", "an existing target keeps its format and variant", { path: target });
    const srcRec = this.registry.find(source);
    const srcPath = srcRec?.location ?? source;
    if (!srcRec && !(await this.opener.exists(srcPath))) {
      throw new MediumError("not-found", `no medium '${source}' is registered and there is no such file`, { path: source });
    }
    // As VBoxManage: the source's format when it can be created, else VDI.
    const sourceFormat = (srcRec?.format as MediumFormat | undefined) ?? (await this.detectFormat(srcPath));
    const format = creatableFormat(options.format ?? (isCreatable(sourceFormat) ? sourceFormat : "VDI"), target);
    const newSource = srcRec ? undefined : srcPath;
    const src = await this.open(srcPath, { readOnly: true });
    try {
      if (!existing) {
        if (variant === "Stream") {
          streamTarget(format, split, target);
          await cloneToStreamVmdk(src, this.opener, target, onProgress);
        } else {
          await cloneToNew(src, { opener: this.opener, path: target, format, variant, split }, { onProgress });
        }
        return await this.registerClone(target, newSource).catch(async (e: unknown) => {
          await this.opener.remove(target).catch(() => undefined);
          throw e;
        });
      }
      const dstRec = this.registry.find(target);
      const dstPath = canonicalLocation(dstRec?.location ?? target);
      const srcFiles = src instanceof ImageChain ? src.layers.map((l) => canonicalLocation(l.path)) : [canonicalLocation(srcPath)];
      if (srcFiles.includes(dstPath)) throw new MediumError("in-use", "cannot clone a medium into itself or its own parent", { path: dstPath });
      if (dstRec) this.refuseIfParent(dstRec, "overwritten");
      const dst = await this.open(dstPath);
      try {
        await copyMedium(src, dst, { onProgress });
      } finally {
        await dst.close();
      }
      return await this.registerClone(dstPath, newSource);
    } finally {
      await src.close();
    }
  }

  /** Register a clone's target, then its source if it was not registered; all or nothing. */
  private async registerClone(target: string, source: string | undefined): Promise<MediumInfo> {
    const known = this.registry.findByLocation(target);
    const info = known ? await this.describe(known) : await this.register(target);
    try {
      if (source) await this.register(source);
    } catch (e) {
      if (!known) this.registry.unregister(info.uuid);
      throw e;
    }
    return info;
  }

  /**
   * Check a medium (registered, or any file) without writing to it or to the registry; see
   * medium-check.ts.
   */
  check(uuidOrPath: string): Promise<MediumCheckReport> {
    return checkMedium(this, uuidOrPath);
  }

  // --- administration: identity, moving, DVD images ---------------------------------------------

  /**
   * Repair a medium's identity (modifymedium --setuuid / --setparentuuid): written into the image
   * where the format stores it (VDI header, VMDK ddb.uuid.*, VHD footer and dynamic header); for
   * qcow2, Parallels and raw images the registry's record is the identity. A new UUID is refused
   * when another registered medium has it; registered children of a medium that changes UUID are
   * re-pointed at the new one. Works on an unregistered file too (a copy refused as a duplicate),
   * which is registered afterwards.
   */
  async setIdentity(uuidOrPath: string, change: { uuid?: string; parentUuid?: string }): Promise<MediumRecord> {
    const rec = this.registry.find(uuidOrPath);
    const path = rec?.location ?? canonicalLocation(uuidOrPath);
    if (!rec && !(await this.opener.exists(path))) throw new MediumError("not-found", `no medium '${uuidOrPath}' is registered and there is no such file`, { path });
    const [uuid, parentUuid] = [change.uuid?.toLowerCase(), change.parentUuid?.toLowerCase()];
    const owner = uuid ? this.registry.findByUuid(uuid) : undefined;
    if (uuid && owner && owner.location !== path) throw duplicateUuid(uuid, owner.location, path);
    if (rec?.deviceType !== "dvd") {
      const format = await this.detectFormat(path);
      if (format === "VHDX") throw new MediumError("unsupported", "VHDX images are read-only here", { path });
      await this.editImage(path, format, rec?.uuid, async (img) => {
        if (uuid && (img instanceof VdiImage || img instanceof VmdkImage || img instanceof VhdImage)) await img.setUuid(uuid);
        if (parentUuid) await writeParentUuid(img, parentUuid);
      });
      // Registered children that name this medium by UUID in their own files follow it.
      for (const child of uuid && rec ? this.registry.children(rec.uuid) : []) {
        await this.editImage(child.location, await this.detectFormat(child.location), child.uuid, async (img) => {
          const layer = asLayer(img);
          if (layer && linksByUuid(layer)) await writeParentUuid(img, uuid!);
        });
      }
    } else if (parentUuid) throw new MediumError("unsupported", "a DVD image has no parent", { path });
    const known = rec ?? this.registry.findByLocation(path) ?? this.requireRecord((await this.register(path)).uuid);
    if (uuid && known.uuid !== uuid) this.registry.changeUuid(known.uuid, uuid);
    if (parentUuid) this.registry.updateRecord(uuid ?? known.uuid, { parentUuid });
    return this.requireRecord(uuid ?? known.uuid);
  }

  /** Open one image (no parents) to change it, then flush and close; read-only where only the registry changes. */
  private async editImage(path: string, format: MediumFormat, uuid: string | undefined, edit: (img: BlockBackend) => Promise<void>, readOnly = !["VDI", "VMDK", "VHD"].includes(format)): Promise<void> {
    const img = await FORMATS[format].open(this.opener, path, { readOnly, uuid });
    try {
      await edit(img);
      await img.flush();
    } finally {
      await img.close();
    }
  }

  /**
   * Move a medium's files (modifymedium --move): to `destination`, a new file name or an existing
   * folder. A VMDK's extent files go along under the names the descriptor gives them; across file
   * systems a file is copied, then removed. The registry follows, and every registered child that
   * names this medium's file (VMDK, VHD, qcow2: what qemu reads) is pointed at the new place, as
   * is the medium itself if it names its own parent by a relative name. Returns the new location.
   */
  async move(uuidOrPath: string, destination: string): Promise<string> {
    const rec = this.requireRecord(uuidOrPath);
    const from = rec.location;
    let to = resolve(destination);
    if (isDirectory(to)) to = join(to, basename(from));
    to = join(canonicalLocation(dirname(to)), basename(to));
    if (to === from) return from;
    const pairs: [string, string][] = [[from, to]];
    for (const extent of await this.extentFiles(rec)) pairs.push([extent, join(dirname(to), relative(dirname(from), extent))]);
    for (const [, target] of pairs) {
      if (await this.opener.exists(target)) throw new MediumError("in-use", `cannot move to ${target}: the file exists`, { path: from });
    }
    // What names a file that moves: learnt (and refused where it cannot be rewritten) before moving.
    const ownParent = rec.deviceType === "hdd" ? await this.parentFileNamed(rec) : null;
    const children: MediumRecord[] = [];
    for (const child of this.registry.children(rec.uuid)) {
      const cf = await this.detectFormat(child.location);
      if (cf === "VHDX") throw new MediumError("unsupported", `cannot move it: its VHDX child ${child.location} could not be re-linked (VHDX is read-only here)`, { path: from });
      if (cf !== "VDI") children.push(child);
    }
    const moved: [string, string][] = [];
    try {
      for (const [a, b] of pairs) {
        await this.moveFile(a, b);
        moved.push([a, b]);
      }
    } catch (e) {
      for (const [a, b] of moved.reverse()) await this.moveFile(b, a).catch(() => undefined);
      throw e;
    }
    this.registry.updateRecord(rec.uuid, { location: to });
    if (ownParent) await this.pointAtParent(to, rec.uuid, ownParent);
    for (const child of children) await this.pointAtParent(child.location, child.uuid, to);
    return to;
  }

  /** The separate extent files of a VMDK descriptor (named relative to it); none for other formats. */
  private async extentFiles(rec: MediumRecord): Promise<string[]> {
    if (rec.format !== "VMDK") return [];
    const f = await this.opener.open(rec.location, { readOnly: true });
    const head = new Uint8Array(4);
    try {
      await f.read(0, head);
    } finally {
      await f.close();
    }
    if (hasSparseMagic(head)) return []; // a monolithic file: its descriptor is inside
    const img = (await FORMATS.VMDK.open(this.opener, rec.location, { readOnly: true, uuid: rec.uuid })) as VmdkImage;
    try {
      const files = img.descriptor.extents.flatMap((e) => (e.file && !isAbsolutePath(e.file) ? [resolveBeside(rec.location, e.file)] : []));
      return [...new Set(files)].filter((p) => p !== rec.location);
    } finally {
      await img.close();
    }
  }

  /** The parent file a differencing image names (absolute), if it names one; VHDX ones are refused. */
  private async parentFileNamed(rec: MediumRecord): Promise<string | null> {
    const format = rec.format as MediumFormat;
    if (format === "VDI" || format === "RAW" || format === "HDD") return null;
    const img = await FORMATS[format].open(this.opener, rec.location, { readOnly: true, uuid: rec.uuid });
    try {
      const layer = asLayer(img);
      const file = layer && layer.parentUuid !== null ? parentFileOf(layer) : null;
      if (file && format === "VHDX") throw new MediumError("unsupported", "a differencing VHDX cannot be re-linked after a move (VHDX is read-only here)", { path: rec.location });
      return file;
    } finally {
      await img.close();
    }
  }

  /**
   * Rewrite the parent file name a child records, nothing else: a VMDK's parentFileNameHint (its
   * ddb.uuid keys and parentCID stay), a qcow2 backing file (its format stays), a VHD's parent
   * name and locators (its parent UUID and time stamp stay).
   */
  private async pointAtParent(childPath: string, uuid: string, parentPath: string): Promise<void> {
    const format = await this.detectFormat(childPath);
    await this.editImage(childPath, format, uuid, async (img) => {
      if (img instanceof VmdkImage && img.hasParent) await img.setParentFileNameHint(nameBeside(img.path, parentPath));
      else if (img instanceof Qcow2Image && img.backingFile !== null) await img.setBackingFile(nameBeside(img.path, parentPath), img.backingFormat);
      else if (img instanceof VhdImage && img.isDifferencing) await img.setParent({ uuid: img.parentUuid!, modifyUuid: img.parentModifyUuid! }, parentPath);
    }, false);
  }

  /** Rename; across file systems copy (holes kept where the source reads zeros), then remove. */
  private async moveFile(from: string, to: string): Promise<void> {
    try {
      await this.opener.rename(from, to);
      return;
    } catch (e) {
      if (!(e instanceof MediumError) || (e.cause as { code?: string } | undefined)?.code !== "EXDEV") throw e;
    }
    const src = await this.opener.open(from, { readOnly: true });
    try {
      const dst = await this.opener.open(to, { create: true });
      try {
        const size = await src.size();
        const buf = new Uint8Array(4 * 1024 * 1024);
        for (let pos = 0; pos < size; pos += buf.length) {
          const chunk = buf.subarray(0, Math.min(buf.length, size - pos));
          const n = await src.read(pos, chunk);
          if (n !== chunk.length) throw new MediumError("io", `short read at ${pos} while copying`, { path: from });
          if (!isZero(chunk)) await dst.write(pos, chunk);
        }
        await dst.truncate(size);
        await dst.flush();
      } catch (e) {
        await dst.close().catch(() => undefined);
        await this.opener.remove(to).catch(() => undefined);
        throw e;
      }
      await dst.close();
    } finally {
      await src.close();
    }
    await this.opener.remove(from);
  }

  /** Register an ISO image as a DVD medium (idempotent); it has no UUID of its own, so one is made. */
  async registerDvd(path: string): Promise<MediumRecord> {
    const known = this.registry.findByLocation(path);
    if (known) {
      if (known.deviceType !== "dvd") throw new MediumError("unsupported", `${known.location} is registered as a ${known.deviceType} medium, not a DVD`, { path });
      return known;
    }
    const { medium } = await openIso(this.opener, path); // refuses what is not ISO 9660
    await medium.close();
    return this.registry.register({ uuid: randomUUID(), location: path, format: "ISO", deviceType: "dvd" });
  }

  private async fileSize(path: string): Promise<number> {
    const f = await this.opener.open(path, { readOnly: true });
    try {
      return await f.size();
    } finally {
      await f.close();
    }
  }

}

/** Write a parent UUID where the format keeps one; qcow2 children keep it in the registry only. */
async function writeParentUuid(img: BlockBackend, uuid: string): Promise<void> {
  const layer = asLayer(img);
  if (!layer || layer.parentUuid === null) throw new MediumError("unsupported", "not a differencing image: it has no parent to change", { path: layer?.path });
  if (img instanceof VdiImage || img instanceof VmdkImage || img instanceof VhdImage) await img.setParentUuid(uuid);
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
