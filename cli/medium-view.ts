/**
 * How the Virtual Media Manager's media are shown: one medium (showmediuminfo) and the media
 * trees (list hdds, list dvds), in text and JSON, with their types, settings and the machines
 * (and snapshots) that use them.
 */
import { statSync } from "node:fs";
import { allowOnly, parseArgs } from "./args.js";
import type { Out } from "./vm-verbs.js";
import { mediumUsage, type MediumUse } from "../machine/medium-usage.js";
import { VmStore } from "../machine/vm-store.js";
import { MediumManager, type MediumInfo } from "../media/medium-manager.js";
import { effectiveAutoReset, effectiveType, type MediumType } from "../media/medium-types.js";
import { canonicalLocation, type DeviceType, type MediaRegistry, type MediumRecord } from "../media/registry.js";

const MiB = 1024 * 1024;

/** What is shown of one medium: its MediumInfo (where it could be read) and the registry's settings. */
export interface MediumView extends Partial<Omit<MediumInfo, "format">> {
  uuid: string;
  parentUuid?: string;
  location: string;
  format: string;
  deviceType: DeviceType;
  /** "inaccessible" when the file is missing or unreadable. */
  state: "created" | "inaccessible";
  /** The base's type (differencing images take it). */
  type: MediumType;
  /** Whether the differencing images of an immutable medium are emptied at power-on. */
  autoReset: boolean;
  description: string;
  properties: Record<string, string>;
  children: string[];
  usedBy: MediumUse[];
  /** Why the medium is inaccessible. */
  error?: string;
}

/** The media registry with the machines' uses of its media, read once per command. */
export interface MediaContext {
  mm: MediumManager;
  usage: Map<string, MediumUse[]>;
}

export function mediaContext(mm = new MediumManager()): MediaContext {
  return { mm, usage: mediumUsage(new VmStore().list()) };
}

/** Uses of a medium: hard disks by UUID, DVD images by the ISO path the drives name. */
export function usesOf(ctx: MediaContext, rec: MediumRecord): MediumUse[] {
  if (rec.deviceType === "hdd") return ctx.usage.get(rec.uuid) ?? [];
  const uses: MediumUse[] = [];
  for (const [key, list] of ctx.usage) if (!isUuidKey(key) && canonicalLocation(key) === rec.location) uses.push(...list);
  return uses;
}

const isUuidKey = (k: string) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(k);

export async function viewOf(ctx: MediaContext, rec: MediumRecord): Promise<MediumView> {
  const reg = ctx.mm.registry;
  const settings = {
    deviceType: rec.deviceType,
    type: effectiveType(reg, rec),
    autoReset: effectiveAutoReset(reg, rec),
    description: rec.description ?? "",
    properties: rec.properties ?? {},
    usedBy: usesOf(ctx, rec),
  };
  const known = { uuid: rec.uuid, ...(rec.parentUuid ? { parentUuid: rec.parentUuid } : {}), location: rec.location, format: rec.format, children: reg.children(rec.uuid).map((c) => c.uuid) };
  try {
    if (rec.deviceType !== "hdd") {
      const size = statSync(rec.location).size;
      return { ...known, state: "created", size, fileSize: size, ...settings };
    }
    return { ...(await ctx.mm.info(rec.uuid)), state: "created", ...settings };
  } catch (e) {
    return { ...known, state: "inaccessible", error: (e as Error).message, ...settings };
  }
}

/** A registry's media of one device type as trees: each base, then its children depth first. */
export function mediaTrees(registry: MediaRegistry, deviceType: DeviceType): { rec: MediumRecord; depth: number }[] {
  const all = registry.list(deviceType);
  const byUuid = new Map(all.map((r) => [r.uuid, r]));
  const out: { rec: MediumRecord; depth: number }[] = [];
  const seen = new Set<string>();
  const visit = (rec: MediumRecord, depth: number) => {
    if (seen.has(rec.uuid)) return;
    seen.add(rec.uuid);
    out.push({ rec, depth });
    for (const c of all) if (c.parentUuid === rec.uuid) visit(c, depth + 1);
  };
  for (const r of all) if (!r.parentUuid || !byUuid.has(r.parentUuid)) visit(r, 0);
  for (const r of all) visit(r, 0); // a loop of parents: shown flat rather than lost
  return out;
}

/** "normal (base)", "immutable (differencing)", as VBoxManage shows a type. */
export function typeText(v: MediumView): string {
  return `${v.type} (${v.parentUuid ? "differencing" : "base"})`;
}

/** "vm (UUID: ...) [snapshot (UUID: ...)]", one line per machine. */
export function usedByLines(uses: readonly MediumUse[]): string[] {
  const byVm = new Map<string, { vm: string; snaps: string[] }>();
  for (const u of uses) {
    const e = byVm.get(u.vmUuid) ?? { vm: u.vm, snaps: [] };
    if (u.snapshot) e.snaps.push(`${u.snapshot.name} (UUID: ${u.snapshot.uuid})`);
    byVm.set(u.vmUuid, e);
  }
  return [...byVm].map(([uuid, e]) => `${e.vm} (UUID: ${uuid})${e.snaps.length ? ` [${e.snaps.join(", ")}]` : ""}`);
}

/** A labelled value; further lines of it aligned under the first. */
function field(label: string, values: string | readonly string[]): string[] {
  const list = typeof values === "string" ? [values] : values;
  return list.map((v, i) => `${i === 0 ? `${label}:`.padEnd(16) : " ".repeat(16)}${v}`);
}

const VARIANT_TEXT: Record<string, string> = {
  Fixed: "fixed default",
  Diff: "differencing default",
  Split2G: "dynamic split2G",
  "Split2G,Fixed": "fixed split2G",
  Stream: "stream optimized",
};

const mbytes = (n: number | undefined) => (n === undefined ? "unknown" : `${Math.round(n / MiB)} MBytes`);

/** showmediuminfo's text for a disk. */
export function describeMedium(v: MediumView): string {
  return [
    ...field("UUID", v.uuid),
    ...field("Parent UUID", v.parentUuid ?? "base"),
    ...field("State", v.state),
    ...(v.error ? field("Access Error", v.error) : []),
    ...field("Type", typeText(v)),
    ...(v.parentUuid && v.type === "immutable" ? field("Auto-Reset", v.autoReset ? "on" : "off") : []),
    ...field("Location", v.location),
    ...field("Storage format", v.format),
    ...(v.variant ? field("Format variant", VARIANT_TEXT[v.variant] ?? "dynamic default") : []),
    ...field("Capacity", mbytes(v.size)),
    ...field("Size on disk", mbytes(v.fileSize)),
    ...Object.entries(v.properties).flatMap(([k, val]) => field("Property", `${k}=${val}`)),
    ...(v.usedBy.length ? field("In use by VMs", usedByLines(v.usedBy)) : []),
    ...(v.children.length ? field("Child UUIDs", v.children) : []),
    ...(v.description ? field("Description", v.description.split("\n")) : []),
    "",
  ].join("\n");
}

/** One medium of `list hdds` / `list dvds`, indented by its depth in its tree. */
function listEntry(v: MediumView, depth: number): string {
  const lines = [
    ...field("UUID", v.uuid),
    ...field("Parent UUID", v.parentUuid ?? "base"),
    ...field("State", v.state),
    ...field("Type", typeText(v)),
    ...(v.parentUuid && v.type === "immutable" ? field("Auto-Reset", v.autoReset ? "on" : "off") : []),
    ...field("Location", v.location),
    ...field("Storage format", v.format),
    ...field("Capacity", mbytes(v.size)),
    ...(v.usedBy.length ? field("In use by VMs", usedByLines(v.usedBy)) : []),
  ];
  const pad = "  ".repeat(depth);
  return lines.map((l) => pad + l).join("\n") + "\n";
}

async function listMedia(argv: string[], out: Out, deviceType: DeviceType): Promise<number> {
  const args = parseArgs(argv, ["json"]);
  allowOnly(args, ["json"]);
  const ctx = mediaContext();
  if (deviceType === "dvd") await registerAttachedIsos(ctx);
  const views: { v: MediumView; depth: number }[] = [];
  for (const { rec, depth } of mediaTrees(ctx.mm.registry, deviceType)) views.push({ v: await viewOf(ctx, rec), depth });
  if (args.options.has("json")) out(JSON.stringify(views.map((e) => e.v)) + "\n");
  else out(views.map((e) => listEntry(e.v, e.depth)).join("\n"));
  return 0;
}

/**
 * ISO images in machines' DVD drives are media too (VirtualBox registers them on attaching):
 * those not registered yet get a record, so they are listed with a UUID.
 */
async function registerAttachedIsos(ctx: MediaContext): Promise<void> {
  for (const key of ctx.usage.keys()) {
    if (isUuidKey(key) || ctx.mm.registry.findByLocation(key)) continue;
    await ctx.mm.registerDvd(key).catch(() => undefined); // a missing or damaged ISO stays unlisted
  }
}

export const listHdds = (argv: string[], out: Out) => listMedia(argv, out, "hdd");
export const listDvds = (argv: string[], out: Out) => listMedia(argv, out, "dvd");
