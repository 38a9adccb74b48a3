/**
 * Medium types (VirtualBox's MediumType): how an image behaves when attached, snapshotted and
 * shared. A property of the base medium, kept in the media registry; differencing images take
 * their base's. The rules for changing a type are VirtualBox's (Medium::setType).
 */
import { MediumError } from "./block.js";
import type { DeviceType, MediaRegistry, MediumRecord } from "./registry.js";

export type MediumType = "normal" | "immutable" | "writethrough" | "shareable" | "readonly" | "multiattach";
export const MEDIUM_TYPES: readonly MediumType[] = ["normal", "immutable", "writethrough", "shareable", "readonly", "multiattach"];

export function parseMediumType(v: string): MediumType | undefined {
  const t = v.toLowerCase();
  return (MEDIUM_TYPES as readonly string[]).includes(t) ? (t as MediumType) : undefined;
}

/**
 * Immutable and multiattach media are attached indirectly: the VM writes into a differencing
 * image of its own, never into the medium.
 */
export function attachedIndirectly(type: MediumType): boolean {
  return type === "immutable" || type === "multiattach";
}

/** Writethrough, shareable and readonly media are left alone by snapshots (not frozen, not restored). */
export function excludedFromSnapshots(type: MediumType): boolean {
  return type === "writethrough" || type === "shareable" || type === "readonly";
}

export interface TypeChangeFacts {
  location: string;
  deviceType: DeviceType;
  /** A differencing image: its type is its base's and cannot be set. */
  isDifferencing: boolean;
  childCount: number;
  /** Fixed-size storage (only those may be shareable). */
  fixed: boolean;
  /** Machines whose current state or snapshots use the medium. */
  attachedTo: number;
}

/** Refuse a type change VirtualBox refuses, with its reasons. */
export function checkTypeChange(to: MediumType, from: MediumType, f: TypeChangeFacts): void {
  if (to === from) return;
  const refuse = (why: string, kind: "unsupported" | "in-use" = "unsupported") => {
    throw new MediumError(kind, `cannot change the type of medium to '${to}': ${why}`, { path: f.location });
  };
  if (f.deviceType === "dvd" && to !== "readonly") refuse("DVD media are always readonly");
  if (f.deviceType === "floppy" && to !== "writethrough" && to !== "readonly") refuse("floppy media are writethrough or readonly");
  if (f.isDifferencing) refuse("it is a differencing image (set the type of its base)");
  if (f.attachedTo > 1 || (attachedIndirectly(to) && f.attachedTo > 0)) {
    refuse(`it is attached to ${f.attachedTo} virtual machine${f.attachedTo === 1 ? "" : "s"} (detach it first)`, "in-use");
  }
  if (to === "writethrough" || to === "shareable" || to === "readonly") {
    if (f.childCount) refuse(`it has ${f.childCount} differencing child${f.childCount === 1 ? "" : "ren"}`, "in-use");
    if (to === "shareable" && !f.fixed) refuse("only fixed-size images can be shareable; this one is dynamically allocated");
    if (to === "readonly" && f.deviceType === "hdd") refuse("readonly is for DVD and floppy images, not hard disks");
  }
}

/** A medium and its parents up to the base (the first element is the medium). */
export function lineage(registry: MediaRegistry, rec: MediumRecord): MediumRecord[] {
  const out = [rec];
  for (let r = rec; r.parentUuid && out.length < 100; ) {
    const p = registry.findByUuid(r.parentUuid);
    if (!p || out.includes(p)) break;
    out.push(p);
    r = p;
  }
  return out;
}

/** The type a medium behaves with: its base's (DVD images are always readonly). */
export function effectiveType(registry: MediaRegistry, rec: MediumRecord): MediumType {
  const base = lineage(registry, rec).at(-1)!;
  return base.type ?? (rec.deviceType === "dvd" ? "readonly" : "normal");
}

/** Auto-reset as set on the image or the nearest parent; on by default for immutable media. */
export function effectiveAutoReset(registry: MediaRegistry, rec: MediumRecord): boolean {
  const set = lineage(registry, rec).find((r) => r.autoReset !== undefined)?.autoReset;
  return set ?? effectiveType(registry, rec) === "immutable";
}
