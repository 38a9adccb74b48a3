/**
 * The VMDK text descriptor: header keys (version, CID, parentCID, createType, parentFileNameHint),
 * extent lines, and the disk database (ddb.*). Pure codec: text in, a line model out, and back.
 *
 * Lines are kept in order, including comments, blank lines and keys we do not know, so a
 * descriptor written back differs only where a value was changed (VirtualBox and VMware tools
 * add keys of their own; losing them would lose their settings).
 */
import { MediumError } from "../../block.js";
import { NULL_UUID } from "../uuid.js";

export type ExtentAccess = "RW" | "RDONLY" | "NOACCESS";
export type ExtentType = "SPARSE" | "FLAT" | "ZERO" | "VMFS" | "VMFSSPARSE" | "VMFSRDM" | "VMFSRAW" | "SESPARSE";

const ACCESS = new Set<string>(["RW", "RDONLY", "NOACCESS"]);
const TYPES = new Set<string>(["SPARSE", "FLAT", "ZERO", "VMFS", "VMFSSPARSE", "VMFSRDM", "VMFSRAW", "SESPARSE"]);

export interface ExtentLine {
  access: ExtentAccess;
  /** Size in 512-byte sectors. */
  sectors: number;
  type: ExtentType;
  /** File name as written (relative to the descriptor's folder); absent for ZERO. */
  file?: string;
  /** Start inside the file, in sectors (FLAT / VMFS); 0 when not written. */
  offset: number;
}

/** The value of `parentCID` meaning "no parent". */
export const NO_PARENT_CID = 0xffffffff;

/** Descriptor texts larger than this are refused (VirtualBox caps the embedded one at 20480 sectors). */
export const MAX_DESCRIPTOR_BYTES = 10 * 1024 * 1024;

type Line =
  | { kind: "text"; text: string }
  | { kind: "key"; key: string; value: string; quoted: boolean; spaced: boolean }
  | { kind: "extent"; extent: ExtentLine };

/** Keys that belong before the extent section; everything else (ddb.*) goes after it. */
const HEADER_KEYS = new Set(["version", "encoding", "CID", "parentCID", "isNativeSnapshot", "createType", "parentFileNameHint"]);
/** Header keys VirtualBox and qemu write without quotes. */
const UNQUOTED = new Set(["version", "CID", "parentCID"]);

export interface CodecContext {
  path?: string;
}

function corrupt(message: string, ctx: CodecContext): MediumError {
  return new MediumError("corrupt", `VMDK descriptor: ${message}`, { path: ctx.path });
}

function parseExtentLine(text: string, ctx: CodecContext): ExtentLine | null {
  const m = /^(\S+)\s+(\d+)\s+(\S+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?\s*$/.exec(text);
  if (!m || !ACCESS.has(m[1]!)) return null;
  if (!TYPES.has(m[3]!)) throw new MediumError("unsupported", `VMDK extent type ${m[3]} is not supported`, { path: ctx.path });
  const sectors = Number(m[2]);
  const offset = m[5] === undefined ? 0 : Number(m[5]);
  if (!Number.isSafeInteger(sectors) || !Number.isSafeInteger(offset) || sectors * 512 > Number.MAX_SAFE_INTEGER) {
    throw corrupt(`extent size or offset out of range in ${JSON.stringify(text)}`, ctx);
  }
  const type = m[3] as ExtentType;
  if (type !== "ZERO" && m[4] === undefined) throw corrupt(`extent without a file name: ${JSON.stringify(text)}`, ctx);
  return { access: m[1] as ExtentAccess, sectors, type, file: m[4], offset };
}

function formatExtent(e: ExtentLine): string {
  let s = `${e.access} ${e.sectors} ${e.type}`;
  if (e.file !== undefined) s += ` "${e.file}"`;
  if (e.type === "FLAT" && e.file !== undefined) s += ` ${e.offset}`;
  else if (e.offset) s += ` ${e.offset}`;
  return s;
}

export class VmdkDescriptor {
  private lines: Line[];

  private constructor(lines: Line[]) {
    this.lines = lines;
  }

  /** Parse descriptor text (NUL padding and CR line ends allowed) and check the keys every descriptor needs. */
  static parse(text: string, ctx: CodecContext = {}): VmdkDescriptor {
    const nul = text.indexOf("\0");
    if (nul >= 0) text = text.slice(0, nul);
    if (text.length > MAX_DESCRIPTOR_BYTES) throw corrupt(`${text.length} bytes is too large`, ctx);
    const raw = text.split("\n");
    if (raw.length > 0 && raw[raw.length - 1] === "") raw.pop();
    const lines: Line[] = [];
    for (const r of raw) {
      const t = r.endsWith("\r") ? r.slice(0, -1) : r;
      const trimmed = t.trim();
      if (trimmed === "" || trimmed.startsWith("#")) {
        lines.push({ kind: "text", text: t });
        continue;
      }
      const extent = parseExtentLine(trimmed, ctx);
      if (extent) {
        lines.push({ kind: "extent", extent });
        continue;
      }
      const kv = /^([A-Za-z0-9_.:-]+)(\s*)=(\s*)(.*)$/.exec(trimmed);
      if (!kv) throw corrupt(`cannot parse line ${JSON.stringify(t)}`, ctx);
      let value = kv[4]!.trim();
      const quoted = value.length >= 2 && value.startsWith('"') && value.endsWith('"');
      if (quoted) value = value.slice(1, -1);
      lines.push({ kind: "key", key: kv[1]!, value, quoted, spaced: kv[2]!.length > 0 || kv[3]!.length > 0 });
    }
    const d = new VmdkDescriptor(lines);
    d.validate(ctx);
    return d;
  }

  /** A new descriptor with the usual sections, no extents and no ddb keys yet. */
  static create(fields: { cid: number; parentCid?: number; createType: string; parentFileNameHint?: string }): VmdkDescriptor {
    const d = new VmdkDescriptor([
      { kind: "text", text: "# Disk DescriptorFile" },
      { kind: "key", key: "version", value: "1", quoted: false, spaced: false },
      { kind: "key", key: "CID", value: hex8(fields.cid), quoted: false, spaced: false },
      { kind: "key", key: "parentCID", value: hex8(fields.parentCid ?? NO_PARENT_CID), quoted: false, spaced: false },
      { kind: "key", key: "createType", value: fields.createType, quoted: true, spaced: false },
      { kind: "text", text: "" },
      { kind: "text", text: "# Extent description" },
      { kind: "text", text: "" },
      { kind: "text", text: "# The Disk Data Base" },
      { kind: "text", text: "#DDB" },
      { kind: "text", text: "" },
    ]);
    if (fields.parentFileNameHint !== undefined) d.set("parentFileNameHint", fields.parentFileNameHint);
    return d;
  }

  private validate(ctx: CodecContext): void {
    const version = this.get("version");
    if (version === undefined) throw corrupt("no version key", ctx);
    if (!/^[123]$/.test(version)) throw new MediumError("unsupported", `VMDK descriptor version ${version} is not supported`, { path: ctx.path });
    for (const key of ["CID", "parentCID"]) {
      const v = this.get(key);
      if (v !== undefined && !/^[0-9a-fA-F]{1,8}$/.test(v)) throw corrupt(`${key} ${JSON.stringify(v)} is not 8 hex digits`, ctx);
    }
    if (this.get("createType") === undefined) throw corrupt("no createType key", ctx);
    if (this.extents.length === 0) throw corrupt("no extent lines", ctx);
  }

  toString(): string {
    return (
      this.lines
        .map((l) => {
          if (l.kind === "text") return l.text;
          if (l.kind === "extent") return formatExtent(l.extent);
          const v = l.quoted ? `"${l.value}"` : l.value;
          return l.spaced ? `${l.key} = ${v}` : `${l.key}=${v}`;
        })
        .join("\n") + "\n"
    );
  }

  /** A value (quotes removed), or undefined. Keys are matched case-sensitively first, then not. */
  get(key: string): string | undefined {
    const line = this.find(key);
    return line?.value;
  }

  private find(key: string): Extract<Line, { kind: "key" }> | undefined {
    let loose: Extract<Line, { kind: "key" }> | undefined;
    for (const l of this.lines) {
      if (l.kind !== "key") continue;
      if (l.key === key) return l;
      if (!loose && l.key.toLowerCase() === key.toLowerCase()) loose = l;
    }
    return loose;
  }

  /** Set a key in place, or add it to its section (header keys before the extents, others at the end). */
  set(key: string, value: string): void {
    if (/["\n\r]/.test(value)) throw new MediumError("unsupported", `descriptor value for ${key} may not contain quotes or line breaks`);
    const line = this.find(key);
    if (line) {
      line.value = value;
      return;
    }
    const isDdb = !HEADER_KEYS.has(key);
    const added: Line = { kind: "key", key, value, quoted: !UNQUOTED.has(key), spaced: isDdb };
    if (isDdb) {
      let at = this.lines.length;
      while (at > 0 && this.lines[at - 1]!.kind === "text" && (this.lines[at - 1] as { text: string }).text.trim() === "") at--;
      this.lines.splice(at, 0, added);
      return;
    }
    // After the last header key, or before the extent section.
    let at = -1;
    for (let i = 0; i < this.lines.length; i++) {
      const l = this.lines[i]!;
      if (l.kind === "key" && HEADER_KEYS.has(l.key)) at = i + 1;
      if (l.kind === "extent") break;
    }
    if (at < 0) at = Math.min(1, this.lines.length);
    this.lines.splice(at, 0, added);
  }

  delete(key: string): void {
    const line = this.find(key);
    if (line) this.lines = this.lines.filter((l) => l !== line);
  }

  /** Every key = value pair, in order (for tools and tests). */
  entries(): [string, string][] {
    return this.lines.flatMap((l) => (l.kind === "key" ? [[l.key, l.value] as [string, string]] : []));
  }

  get extents(): ExtentLine[] {
    return this.lines.flatMap((l) => (l.kind === "extent" ? [{ ...l.extent }] : []));
  }

  /** Replace the extent lines (kept where the first one was, or after "# Extent description"). */
  set extents(list: ExtentLine[]) {
    let at = this.lines.findIndex((l) => l.kind === "extent");
    if (at < 0) {
      const heading = this.lines.findIndex((l) => l.kind === "text" && /^#\s*Extent description/i.test(l.text.trim()));
      at = heading >= 0 ? heading + 1 : this.lines.length;
    }
    const before = this.lines.slice(0, at).filter((l) => l.kind !== "extent");
    const after = this.lines.slice(at).filter((l) => l.kind !== "extent");
    this.lines = [...before, ...list.map((e): Line => ({ kind: "extent", extent: { ...e } })), ...after];
  }

  // --- typed accessors --------------------------------------------------------------------------

  get version(): number {
    return Number(this.get("version"));
  }
  get cid(): number {
    return parseInt(this.get("CID") ?? "0", 16) >>> 0;
  }
  set cid(v: number) {
    this.set("CID", hex8(v));
  }
  /** The parent's CID, or null for a base image (parentCID=ffffffff or absent). */
  get parentCid(): number | null {
    const v = this.get("parentCID");
    if (v === undefined) return null;
    const n = parseInt(v, 16) >>> 0;
    return n === NO_PARENT_CID ? null : n;
  }
  set parentCid(v: number | null) {
    this.set("parentCID", hex8(v ?? NO_PARENT_CID));
  }
  get createType(): string {
    return this.get("createType")!;
  }
  get parentFileNameHint(): string | undefined {
    return this.get("parentFileNameHint");
  }
  /** Sum of the extents' sizes, in sectors. */
  get totalSectors(): number {
    return this.extents.reduce((a, e) => a + e.sectors, 0);
  }

  /** CHS geometry from ddb.geometry.*, if all three are there and numeric. */
  get geometry(): { cylinders: number; heads: number; sectors: number } | undefined {
    const c = Number(this.get("ddb.geometry.cylinders"));
    const h = Number(this.get("ddb.geometry.heads"));
    const s = Number(this.get("ddb.geometry.sectors"));
    return [c, h, s].every((n) => Number.isInteger(n) && n > 0) ? { cylinders: c, heads: h, sectors: s } : undefined;
  }
  get adapterType(): string | undefined {
    return this.get("ddb.adapterType");
  }
  /** A ddb.uuid.* value (image, parent, modification, parentmodification), lower-cased. */
  uuid(which: "image" | "parent" | "modification" | "parentmodification"): string | undefined {
    return this.get(`ddb.uuid.${which}`)?.toLowerCase();
  }
  setUuid(which: "image" | "parent" | "modification" | "parentmodification", uuid: string): void {
    this.set(`ddb.uuid.${which}`, uuid);
  }

  /**
   * The disk database of a new image, as VirtualBox writes it: hardware version 4, the adapter
   * type, the four UUIDs (a base image's parent ones are null) and the default CHS geometry.
   */
  setDiskDatabase(o: { size: number; adapterType: string; uuid: string; modification: string; parent?: { uuid: string; modifyUuid: string } }): void {
    const geo = defaultGeometry(o.size);
    this.set("ddb.virtualHWVersion", "4");
    this.set("ddb.adapterType", o.adapterType);
    this.setUuid("image", o.uuid);
    this.setUuid("parent", o.parent?.uuid ?? NULL_UUID);
    this.setUuid("modification", o.modification);
    this.setUuid("parentmodification", o.parent?.modifyUuid ?? NULL_UUID);
    this.set("ddb.geometry.cylinders", String(geo.cylinders));
    this.set("ddb.geometry.heads", String(geo.heads));
    this.set("ddb.geometry.sectors", String(geo.sectors));
  }
}

export function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, "0");
}

/** Default CHS geometry as VirtualBox derives it for a new disk (16 heads, 63 sectors, capped cylinders). */
export function defaultGeometry(size: number): { cylinders: number; heads: number; sectors: number } {
  return { cylinders: Math.max(1, Math.min(16383, Math.floor(size / (16 * 63 * 512)))), heads: 16, sectors: 63 };
}

/** Whether `bytes` (the start of a file) look like a text descriptor. */
export function looksLikeDescriptor(bytes: Uint8Array): boolean {
  const sig = "# Disk DescriptorFile";
  let i = 0;
  while (i < bytes.length && (bytes[i] === 0x20 || bytes[i] === 0x09 || bytes[i] === 0x0a || bytes[i] === 0x0d)) i++;
  if (bytes.length - i < sig.length) return false;
  for (let k = 0; k < sig.length; k++) if (bytes[i + k] !== sig.charCodeAt(k)) return false;
  return true;
}
