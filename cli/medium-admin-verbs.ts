/**
 * Medium administration, VBoxManage-style: modifymedium's --type, --autoreset, --description,
 * --move, --setuuid, --setparentuuid and --release; mediumproperty; and the in-use refusal of
 * closemedium. Machines are consulted (and, for --setuuid, --move of a DVD image and --release,
 * edited) through VmStore; a machine that is running is never changed under its feet.
 */
import { randomUUID } from "node:crypto";
import { optString, parseArgs, UsageError, type ParsedArgs } from "./args.js";
import { mediaContext, usedByLines, usesOf, type MediaContext } from "./medium-view.js";
import type { Out } from "./vm-verbs.js";
import { runningSession } from "../machine/control-channel.js";
import { allSnapshots, type MediumUse } from "../machine/medium-usage.js";
import type { AttachmentConfig } from "../machine/storage.js";
import { VmStore, type MachineDefinition } from "../machine/vm-store.js";
import { MediumError } from "../media/block.js";
import { isUuid } from "../media/formats/uuid.js";
import { MediumManager } from "../media/medium-manager.js";
import { effectiveType, parseMediumType } from "../media/medium-types.js";
import { setMediumType } from "../machine/medium-type-change.js";
import { canonicalLocation, type MediumRecord } from "../media/registry.js";
import { openIso } from "../media/formats/iso/iso.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";

/** modifymedium options handled here (--setuuid is taken out of argv first: its value is optional). */
export const ADMIN_OPTIONS = ["type", "autoreset", "description", "move", "setparentuuid", "release"] as const;

export type MediumKind = "disk" | "dvd";

/**
 * `--setuuid [UUID]`: the value is optional (absent, empty, or followed by another option: a
 * random UUID). Returns argv without it.
 */
export function takeSetUuid(argv: string[]): { rest: string[]; setUuid?: string } {
  const rest: string[] = [];
  let setUuid: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith("--setuuid=")) setUuid = a.slice("--setuuid=".length);
    else if (a !== "--setuuid") rest.push(a);
    else {
      const next = argv[i + 1];
      // A UUID or "" is its value; a file name or another option is not.
      setUuid = next !== undefined && (next === "" || isUuid(next.toLowerCase())) ? (i++, next) : "";
    }
  }
  if (setUuid === undefined) return { rest };
  const uuid = setUuid === "" ? randomUUID() : setUuid.toLowerCase();
  if (!isUuid(uuid)) throw new UsageError(`--setuuid ${setUuid}: not a UUID`);
  return { rest, setUuid: uuid };
}

/** `[disk|dvd] FILE|UUID` of a medium verb. */
export function mediumTarget(args: ParsedArgs, usage: string): { kind?: MediumKind; target: string } {
  const pos = args.positional;
  const [word, target] = pos.length === 2 ? pos : [undefined, pos[0]];
  if (!target || pos.length > 2) throw new UsageError(usage);
  if (word === undefined) return { target };
  if (word === "disk" || word === "hdd") return { kind: "disk", target };
  if (word === "dvd") return { kind: "dvd", target };
  throw new UsageError(word === "floppy" ? "floppy media are not supported" : usage);
}

/** The registry's record for a target, registering a file on first use (an ISO as a DVD image). */
export async function resolveMedium(mm: MediumManager, kind: MediumKind | undefined, target: string): Promise<MediumRecord> {
  const rec = (await knownOrDvd(mm, kind, target)) ?? mm.requireRecord((await mm.register(target)).uuid);
  return checkKind(rec, kind);
}

/** The registered medium, or an ISO registered as a DVD image now; undefined for an unregistered disk. */
async function knownOrDvd(mm: MediumManager, kind: MediumKind | undefined, target: string): Promise<MediumRecord | undefined> {
  const rec = mm.registry.find(target);
  if (rec) return checkKind(rec, kind);
  if (kind === "dvd" || (kind === undefined && (await isIso(target)))) return mm.registerDvd(target);
  return undefined;
}

function checkKind(rec: MediumRecord, kind: MediumKind | undefined): MediumRecord {
  const want = kind === "dvd" ? "dvd" : kind === "disk" ? "hdd" : rec.deviceType;
  if (rec.deviceType !== want) throw new MediumError("unsupported", `${rec.location} is a ${rec.deviceType === "dvd" ? "DVD image" : "hard disk"}, not a ${kind}`, { path: rec.location });
  return rec;
}

export async function isIso(path: string): Promise<boolean> {
  try {
    const { medium } = await openIso(new NodeFileOpener(), path);
    await medium.close();
    return true;
  } catch {
    return false;
  }
}

/** Refuse while a machine using the medium runs: it has the files open. */
async function refuseIfRunning(uses: readonly MediumUse[], what: string, rec: MediumRecord): Promise<void> {
  const store = new VmStore();
  for (const vmUuid of new Set(uses.map((u) => u.vmUuid))) {
    const vm = store.get(vmUuid);
    if (await runningSession(store.machineDir(vm.name))) {
      throw new MediumError("in-use", `cannot ${what}: machine '${vm.name}' is running and uses it (power it off first)`, { path: rec.location });
    }
  }
}

/** Uses of a medium and of every differencing image below it (they open it as their parent). */
function familyUses(ctx: MediaContext, rec: MediumRecord): MediumUse[] {
  const reg = ctx.mm.registry;
  const family = [rec];
  for (let i = 0; i < family.length && family.length < 10_000; i++) family.push(...reg.children(family[i]!.uuid));
  return family.flatMap((r) => usesOf(ctx, r));
}

/** Change attachments of the machines named, in their current state and (unless `currentOnly`) snapshots. */
function editMachines(vmUuids: Iterable<string>, edit: (a: AttachmentConfig) => AttachmentConfig | null, currentOnly = false): void {
  const store = new VmStore();
  for (const uuid of new Set(vmUuids)) {
    const vm: MachineDefinition = store.get(uuid);
    const configs = [vm.storageControllers, ...(currentOnly ? [] : allSnapshots(vm.snapshot).map((s) => s.storageControllers))];
    for (const ctls of configs) for (const c of ctls) c.attachments = c.attachments.flatMap((a) => edit(a) ?? []);
    store.save(vm);
  }
}

const onOff = (name: string, v: string): boolean => {
  if (v === "on" || v === "off") return v === "on";
  throw new UsageError(`--${name} ${v}: on or off`);
};

/** What modifymedium's administration options did, for --json. */
export interface AdminResult {
  uuid: string;
  location: string;
  type?: string;
  autoReset?: boolean;
  description?: string;
  parentUuid?: string;
  movedFrom?: string;
  released?: string[];
}

/**
 * Apply modifymedium's administration options, in this order: identity (--setuuid,
 * --setparentuuid), settings (--type, --autoreset, --description), --move, --release.
 */
export async function modifyMediumAdmin(kind: MediumKind | undefined, target: string, args: ParsedArgs, setUuid: string | undefined, out: Out): Promise<AdminResult> {
  const say = args.options.has("json") ? () => undefined : out;
  const mm = new MediumManager();
  let ctx = mediaContext(mm);
  const parentUuid = optString(args, "setparentuuid")?.toLowerCase();
  if (parentUuid !== undefined && !isUuid(parentUuid)) throw new UsageError(`--setparentuuid ${parentUuid}: not a UUID`);
  let rec: MediumRecord;
  if (setUuid || parentUuid) {
    // An unregistered disk is repaired as a file (it may be a copy refused as a duplicate).
    const known = await knownOrDvd(mm, kind, target);
    const uses = known ? usesOf(ctx, known) : [];
    if (known) await refuseIfRunning(uses, "change its UUID", known);
    rec = await mm.setIdentity(known?.uuid ?? target, { uuid: setUuid, parentUuid });
    if (known && setUuid && known.deviceType === "hdd" && known.uuid !== rec.uuid) {
      editMachines(uses.map((u) => u.vmUuid), (a) => (a.medium === known.uuid ? { ...a, medium: rec.uuid } : a));
    }
    if (setUuid) say(`UUID changed to: ${rec.uuid}\n`);
    if (parentUuid) say(`Parent UUID changed to: ${parentUuid}\n`);
    ctx = mediaContext(mm);
  } else rec = await resolveMedium(mm, kind, target);
  const result: AdminResult = { uuid: rec.uuid, location: rec.location, ...(parentUuid ? { parentUuid } : {}) };

  const typeArg = optString(args, "type");
  if (typeArg !== undefined) {
    const to = parseMediumType(typeArg);
    if (!to) throw new UsageError(`--type ${typeArg}: normal, writethrough, immutable, shareable, readonly or multiattach`);
    await setMediumType(mm, rec.uuid, to, new VmStore().list());
    result.type = to;
    say(`Type set to ${to}.\n`);
  }
  const autoReset = optString(args, "autoreset");
  if (autoReset !== undefined) {
    const on = onOff("autoreset", autoReset);
    const current = mm.requireRecord(rec.uuid);
    if (!current.parentUuid && effectiveType(mm.registry, current) !== "immutable") {
      throw new MediumError("unsupported", `--autoreset applies to immutable media (for their differencing images) and to differencing images; this is a ${effectiveType(mm.registry, current)} base medium`, { path: rec.location });
    }
    mm.registry.updateRecord(rec.uuid, { autoReset: on });
    result.autoReset = on;
    say(`Auto-reset turned ${on ? "on" : "off"}.\n`);
  }
  const description = optString(args, "description");
  if (description !== undefined) {
    mm.registry.updateRecord(rec.uuid, { description: description || undefined });
    result.description = description;
    say(description ? "Description set.\n" : "Description removed.\n");
  }
  const dest = optString(args, "move");
  if (dest !== undefined) {
    await refuseIfRunning(familyUses(ctx, rec), "move it", rec);
    const from = rec.location;
    const to = await mm.move(rec.uuid, dest);
    if (rec.deviceType === "dvd" && to !== from) {
      // DVD drives name the ISO by its path: stopped machines follow it.
      const uses = usesOf(ctx, rec);
      editMachines(uses.map((u) => u.vmUuid), (a) => (a.image && canonicalLocation(a.image) === from ? { ...a, image: to } : a));
    }
    result.location = to;
    result.movedFrom = from;
    ctx = mediaContext(mm);
    say(to === from ? `${from} is already there.\n` : `Moved ${from} to ${to}.\n`);
  }
  if (args.options.has("release")) result.released = await release(ctx, mm.requireRecord(rec.uuid), say);
  return result;
}

/**
 * --release: detach the medium from the current state of every machine using it (a disk's
 * attachment goes; a DVD drive is emptied). Refused, changing nothing, while one of them runs
 * or a snapshot uses it (as VirtualBox: the snapshot would keep it anyway).
 */
async function release(ctx: MediaContext, rec: MediumRecord, say: Out): Promise<string[]> {
  const uses = usesOf(ctx, rec);
  const inSnapshots = uses.filter((u) => u.snapshot);
  if (inSnapshots.length) {
    throw new MediumError("in-use", `cannot release it: snapshots use it (${usedByLines(inSnapshots).join("; ")}); delete those snapshots first`, { path: rec.location });
  }
  await refuseIfRunning(uses, "release it", rec);
  const vms = [...new Set(uses.map((u) => u.vmUuid))];
  editMachines(
    vms,
    (a) => {
      if (rec.deviceType === "hdd") return a.medium === rec.uuid ? null : a;
      return a.image && canonicalLocation(a.image) === rec.location ? { ...a, image: undefined } : a;
    },
    true,
  );
  const names = uses.map((u) => u.vm).filter((n, i, all) => all.indexOf(n) === i);
  say(names.length ? `Released from: ${names.join(", ")}.\n` : "The medium is not attached to any machine.\n");
  return names;
}

/** closemedium: refused while any machine's current state or snapshot uses the medium. */
export function refuseIfUsed(rec: MediumRecord, ctx = mediaContext()): void {
  const uses = usesOf(ctx, rec);
  if (uses.length) {
    throw new MediumError("in-use", `medium {${rec.uuid}} is in use by VMs: ${usedByLines(uses).join("; ")} (detach it first: modifymedium --release)`, { path: rec.location });
  }
}

/**
 * mediumproperty [disk|dvd] set FILE|UUID NAME VALUE | get FILE|UUID NAME | delete FILE|UUID NAME:
 * free-form properties kept with the medium in the registry.
 */
export async function mediumproperty(argv: string[], out: Out): Promise<number> {
  const usage = "mediumproperty [disk|dvd] set FILE|UUID NAME VALUE | get FILE|UUID NAME | delete FILE|UUID NAME";
  const args = parseArgs(argv);
  if (args.options.size) throw new UsageError(`unknown option --${[...args.options.keys()][0]}`);
  const pos = [...args.positional];
  let kind: MediumKind | undefined;
  if (pos[0] === "disk" || pos[0] === "hdd" || pos[0] === "dvd") kind = pos.shift() === "dvd" ? "dvd" : "disk";
  const [op, target, name, value] = pos;
  const arity = { set: 4, get: 3, delete: 3 }[op as "set" | "get" | "delete"];
  if (!arity || pos.length !== arity || !target || !name) throw new UsageError(usage);
  const mm = new MediumManager();
  const rec = await resolveMedium(mm, kind, target);
  if (op === "get") {
    const v = rec.properties?.[name];
    if (v === undefined) throw new MediumError("not-found", `property '${name}' is not set on medium {${rec.uuid}}`, { path: rec.location });
    out(`Value: ${v}\n`);
  } else if (op === "set") {
    mm.registry.setProperty(rec.uuid, name, value!);
    out(`Property '${name}' set.\n`);
  } else {
    const had = rec.properties?.[name] !== undefined;
    mm.registry.setProperty(rec.uuid, name, undefined);
    out(had ? `Property '${name}' deleted.\n` : `Property '${name}' was not set.\n`);
  }
  return 0;
}

