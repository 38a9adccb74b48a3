/**
 * Medium verbs, VBoxManage-style: createmedium, showmediuminfo, closemedium, modifymedium
 * (--resize, --compact; the administration options are medium-admin-verbs.ts's), checkmedium,
 * clonemedium. Listing and describing media is medium-view.ts's.
 */
import { allowOnly, optNumber, optString, parseArgs, requireOpt, UsageError, type ParsedArgs } from "./args.js";
import { MediumManager, type MediumCheckReport, type MediumFormat, type MediumInfo } from "../media/medium-manager.js";
import { parseFormat } from "../media/formats.js";
import type { ImageVariant } from "../media/clone.js";
import { progress } from "./progress.js";
import type { Out } from "./vm-verbs.js";
import { basename, resolve } from "node:path";
import { readFileSync, realpathSync, statSync } from "node:fs";
import { createRawDiskVmdk } from "../media/formats/vmdk/raw-disk.js";
import { ISO_SECTOR, openIso } from "../media/formats/iso/iso.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";
import { ADMIN_OPTIONS, isIso, mediumTarget, modifyMediumAdmin, refuseIfUsed, resolveMedium, takeSetUuid } from "./medium-admin-verbs.js";
import { describeMedium, mediaContext, usedByLines, viewOf, type MediumView } from "./medium-view.js";

const MiB = 1024 * 1024;

function formatOpt(v: string | undefined): MediumFormat | undefined {
  if (v === undefined) return undefined;
  const f = parseFormat(v);
  if (!f) throw new UsageError(`--format ${v}: supported formats are VDI, VMDK, VHD, HDD (Parallels), QCOW2 and RAW`);
  return f;
}

/** VBoxManage's --variant: Standard, Fixed, Split2G, Stream, ESX, comma-separated. */
function variantOpt(v: string | undefined): { variant?: ImageVariant | "Stream"; split?: boolean } {
  if (v === undefined) return {};
  const parts = v.split(",").map((p) => p.trim().toLowerCase());
  if (!parts.every((p) => ["standard", "fixed", "split2g", "stream", "esx"].includes(p))) {
    throw new UsageError(`--variant ${v}: Standard, Fixed, Split2G, Split2G,Fixed, Stream or ESX`);
  }
  const kinds = ["fixed", "stream", "esx"].filter((k) => parts.includes(k));
  if (kinds.length > 1) throw new UsageError(`--variant ${v}: choose one of Fixed, Stream and ESX`);
  const variant = parts.includes("stream") ? "Stream" : parts.includes("esx") ? "ESX" : parts.includes("fixed") ? "Fixed" : "Standard";
  return { variant, ...(parts.includes("split2g") ? { split: true } : {}) };
}

/** What showmediuminfo --json prints of a disk (and clonemedium --json of its clone). */
async function diskView(info: MediumInfo): Promise<MediumView> {
  const ctx = mediaContext();
  return viewOf(ctx, ctx.mm.requireRecord(info.uuid));
}

/** `--property KEY=VALUE` may repeat: take them all out of argv before the usual parsing. */
function takeProperties(argv: string[]): { rest: string[]; properties: Map<string, string> } {
  const rest: string[] = [];
  const properties = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = a === "--property" ? argv[++i] : a.startsWith("--property=") ? a.slice("--property=".length) : undefined;
    if (value === undefined) {
      if (a === "--property") throw new UsageError("--property needs KEY=VALUE");
      rest.push(a);
      continue;
    }
    const eq = value.indexOf("=");
    if (eq <= 0) throw new UsageError(`--property ${value}: KEY=VALUE`);
    properties.set(value.slice(0, eq), value.slice(eq + 1));
  }
  return { rest, properties };
}

/** The size of a host disk (a block device's stat size is 0: /sys knows it) or of a file. */
function deviceSize(device: string): number {
  const st = statSync(device);
  if (!st.isBlockDevice()) return st.size;
  const name = basename(realpathSync(device));
  return Number(readFileSync(`/sys/class/block/${name}/size`, "utf8").trim()) * 512;
}

/** createmedium --variant RawDisk: a VMDK that points at a host disk or some of its partitions. */
async function createRawDisk(path: string, properties: Map<string, string>, json: boolean, out: Out): Promise<number> {
  const device = properties.get("RawDrive");
  if (!device) throw new UsageError("--variant RawDisk needs --property RawDrive=DEVICE");
  for (const k of properties.keys()) if (k !== "RawDrive" && k !== "Partitions") throw new UsageError(`--property ${k}: RawDrive and Partitions are known`);
  const list = properties.get("Partitions");
  const partitions = list === undefined ? undefined : list.split(",").map((p) => Number(p.trim()));
  if (partitions?.some((n) => !Number.isInteger(n))) throw new UsageError(`--property Partitions=${list}: partition numbers, comma separated`);
  await createRawDiskVmdk(new NodeFileOpener(), path, { device: resolve(device), deviceSize: deviceSize(device), partitions });
  const info = await new MediumManager().register(path);
  out(json ? JSON.stringify(info) + "\n" : `RAW host disk access VMDK file ${path} created successfully. UUID: ${info.uuid}\n`);
  return 0;
}

export async function createmedium(argv: string[], out: Out): Promise<number> {
  const { rest, properties } = takeProperties(argv);
  argv = rest;
  const args = parseArgs(argv, ["json"]);
  if (optString(args, "variant")?.toLowerCase() === "rawdisk") {
    allowOnly(args, ["filename", "format", "variant", "json"]);
    const f = optString(args, "format");
    if (f && f.toUpperCase() !== "VMDK") throw new UsageError("--variant RawDisk makes a VMDK");
    return createRawDisk(requireOpt(args, "filename"), properties, args.options.has("json"), out);
  }
  if (properties.size) throw new UsageError("--property is for --variant RawDisk");
  allowOnly(args, ["filename", "size", "sizebyte", "format", "variant", "diffparent", "json"]);
  const [kind = "disk"] = args.positional;
  if (kind !== "disk") throw new UsageError(`createmedium ${kind}: only 'disk' is supported`);
  const path = requireOpt(args, "filename");
  const sizeMb = optNumber(args, "size");
  const sizeBytes = optNumber(args, "sizebyte");
  const { variant, split } = variantOpt(optString(args, "variant"));
  const parent = optString(args, "diffparent");
  if (!parent && sizeMb === undefined && sizeBytes === undefined) throw new UsageError("--size MB (or --sizebyte) is required");
  const info = await new MediumManager().create({
    path,
    format: formatOpt(optString(args, "format")),
    size: sizeBytes ?? (sizeMb !== undefined ? sizeMb * MiB : undefined),
    variant,
    split,
    parent,
  });
  out(args.options.has("json") ? JSON.stringify(info) + "\n" : `Medium created. UUID: ${info.uuid}\n`);
  return 0;
}

export async function showmediuminfo(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv, ["json"]);
  allowOnly(args, ["json"]);
  const { kind: asked, target } = mediumTarget(args, "showmediuminfo [disk|dvd] FILE|UUID [--json]");
  const mm = new MediumManager();
  const known = mm.registry.find(target);
  if (asked === "dvd" || known?.deviceType === "dvd" || (!known && !asked && (await looksLikeIso(target)))) {
    return showDvdInfo(args, out);
  }
  const info = known ? await mm.info(target) : await mm.register(target);
  const view = await diskView(info);
  out(args.options.has("json") ? JSON.stringify(view) + "\n" : describeMedium(view));
  return 0;
}

/** An ISO 9660 volume descriptor at sector 16 (the file is a CD/DVD image, shown as one). */
const looksLikeIso = isIso;

/** showmediuminfo for a CD/DVD image: read-only ISO 9660 media with their volume ID; registered as a DVD image. */
async function showDvdInfo(args: ParsedArgs, out: Out): Promise<number> {
  const target = args.positional.length === 2 ? args.positional[1] : args.positional[0];
  if (!target || args.positional.length > 2) throw new UsageError("showmediuminfo dvd FILE|UUID [--json]");
  const ctx = mediaContext();
  const rec = await resolveMedium(ctx.mm, "dvd", target);
  const { medium, info } = await openIso(new NodeFileOpener(), rec.location);
  const size = medium.size;
  await medium.close();
  const view = await viewOf(ctx, rec);
  const shown = { ...view, location: rec.location, format: "ISO", deviceType: "dvd", readOnly: true, size, sectorSize: ISO_SECTOR, volumeId: info.volumeId };
  if (args.options.has("json")) out(JSON.stringify(shown) + "\n");
  else {
    out(
      [
        `UUID:           ${rec.uuid}`,
        `Location:       ${shown.location}`,
        `Storage format: ISO (ISO 9660, ${ISO_SECTOR}-byte sectors)`,
        `Device type:    DVD, read-only`,
        `Type:           ${view.type}`,
        `Volume ID:      ${info.volumeId}`,
        `Capacity:       ${Math.round(size / 1048576)} MBytes (${size} bytes)`,
        ...Object.entries(view.properties).map(([k, v]) => `Property:       ${k}=${v}`),
        ...usedByLines(view.usedBy).map((l, i) => `${i ? " ".repeat(16) : "In use by VMs:  "}${l}`),
        ...(view.description ? [`Description:    ${view.description}`] : []),
        "",
      ].join("\n"),
    );
  }
  return 0;
}

/** `[disk] FILE|UUID`: the target of a medium verb. */
function diskTarget(args: ParsedArgs, usage: string): string {
  const [kind, target] = args.positional.length === 2 ? args.positional : ["disk", args.positional[0]];
  if (!target || args.positional.length > 2 || (kind !== "disk" && kind !== "hdd")) throw new UsageError(usage);
  return target;
}

export async function closemedium(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv, ["delete", "json"]);
  allowOnly(args, ["delete", "json"]);
  const { kind, target } = mediumTarget(args, "closemedium [disk|dvd] FILE|UUID [--delete] [--json]");
  const deleted = args.options.has("delete");
  const mm = new MediumManager();
  const rec = mm.requireRecord(target);
  if (kind && (kind === "dvd") !== (rec.deviceType === "dvd")) throw new UsageError(`${rec.location} is not a ${kind} medium`);
  refuseIfUsed(rec);
  await mm.close(rec.uuid, { delete: deleted });
  if (args.options.has("json")) out(JSON.stringify({ uuid: rec.uuid, location: rec.location, deleted }) + "\n");
  else out(`Medium ${rec.location} {${rec.uuid}} closed${deleted ? " and deleted" : ""}.\n`);
  return 0;
}

const PHASES: Record<string, string> = { scan: "reading blocks", move: "moving blocks" };

export async function modifymedium(argv: string[], out: Out): Promise<number> {
  const { rest, setUuid } = takeSetUuid(argv);
  const args = parseArgs(rest, ["compact", "json", "release"]);
  allowOnly(args, ["resize", "resizebyte", "compact", "json", ...ADMIN_OPTIONS]);
  const usage = "modifymedium [disk|dvd] FILE|UUID --resize MB | --compact | --type T | --autoreset on|off | --description TEXT | --move PATH | --setuuid [UUID] | --setparentuuid UUID | --release [--json]";
  const picked = mediumTarget(args, usage);
  let target = picked.target;
  const json = args.options.has("json");
  const compact = args.options.has("compact");
  const mb = optNumber(args, "resize");
  const bytes = optNumber(args, "resizebyte") ?? (mb !== undefined ? mb * MiB : undefined);
  const admin = setUuid !== undefined || ADMIN_OPTIONS.some((o) => args.options.has(o));
  if (bytes === undefined && !compact && !admin) throw new UsageError("modifymedium needs an option: " + usage);
  if (admin) {
    const done = await modifyMediumAdmin(picked.kind, target, args, setUuid, out);
    if (bytes === undefined && !compact) {
      if (json) out(JSON.stringify(done) + "\n");
      return 0;
    }
    target = done.uuid;
  }
  if (picked.kind === "dvd") throw new UsageError("DVD images cannot be resized or compacted");
  const mm = new MediumManager();
  const before = mm.registry.find(target) ? await mm.info(target) : await mm.register(target);
  if (bytes !== undefined) {
    const bar = progress("Resizing");
    try {
      await mm.resize(target, bytes, { onProgress: (done, total, phase) => bar.update(done, total, PHASES[phase]) });
    } finally {
      bar.finish();
    }
    if (!json) out(`Resized to ${bytes} bytes.\n`);
  }
  if (compact) {
    const bar = progress("Compacting");
    try {
      await mm.compact(target, { onProgress: (done, total, phase) => bar.update(done, total, PHASES[phase]) });
    } finally {
      bar.finish();
    }
  }
  const after = await mm.info(target);
  if (compact && !json) out(`Compacted: ${before.fileSize} -> ${after.fileSize} bytes on disk.\n`);
  if (json) {
    out(
      JSON.stringify({
        uuid: after.uuid,
        location: after.location,
        sizeBefore: before.size,
        size: after.size,
        fileSizeBefore: before.fileSize,
        fileSize: after.fileSize,
        resized: bytes !== undefined,
        compacted: compact,
      }) + "\n",
    );
  }
  return 0;
}

/**
 * clonemedium [disk] SOURCE TARGET: a new image (new UUID, the source's format unless --format)
 * holding what the guest sees on SOURCE, or with --existing, written into an existing medium.
 */
export async function clonemedium(argv: string[], out: Out): Promise<number> {
  const usage = "clonemedium [disk] FILE|UUID FILE|UUID [--format VDI|VMDK|VHD|HDD|QCOW2|RAW] [--variant Standard|Fixed|Split2G|Stream|ESX] [--existing] [--json]";
  const args = parseArgs(argv, ["existing", "json"]);
  allowOnly(args, ["format", "variant", "existing", "json"]);
  const pos = args.positional;
  const [kind, source, target] = pos.length === 3 ? pos : ["disk", ...pos];
  if (kind === "dvd" || kind === "floppy") throw new UsageError(`clonemedium ${kind}: only disks are supported`);
  if (!source || !target || pos.length > 3 || (kind !== "disk" && kind !== "hdd")) throw new UsageError(usage);
  const format = formatOpt(optString(args, "format"));
  const { variant, split } = variantOpt(optString(args, "variant"));
  const existing = args.options.has("existing");
  if (existing && (format || variant)) throw new UsageError("--format and --variant cannot be used with --existing");
  const bar = progress("Cloning");
  let info: MediumInfo;
  try {
    info = await new MediumManager().clone(source, target, {
      format,
      variant,
      split,
      existing,
      onProgress: (done, total) => bar.update(Math.ceil(done / MiB), Math.ceil(total / MiB), "MBytes copied"),
    });
  } finally {
    bar.finish();
  }
  out(args.options.has("json") ? JSON.stringify(await diskView(info)) + "\n" : `Clone medium created in format '${info.format}'. UUID: ${info.uuid}\n`);
  return 0;
}

function describeCheck(r: MediumCheckReport): string {
  const kind = r.variant === "Fixed" ? "fixed" : r.variant === "Diff" ? "differencing" : r.variant === "Standard" ? "dynamic" : undefined;
  const what = [r.format, kind, r.size !== undefined ? `${Math.round(r.size / MiB)} MBytes` : undefined].filter(Boolean).join(", ");
  const lines = [`Checking ${r.location} (${what})`];
  for (const c of r.chain) lines.push(`  parent: ${c.location} {${c.uuid}}`);
  for (const i of r.issues) lines.push(`${i.severity}: ${i.message}${i.severity === "error" ? ` [${i.code}]` : ""}`);
  const errors = r.issues.filter((i) => i.severity === "error").length;
  if (errors) {
    lines.push(`${errors} ${errors === 1 ? "error was" : "errors were"} found: the medium is corrupt or its chain is broken.`);
  } else {
    lines.push("No errors were found on the medium.");
    if (r.leakedBytes > 0) {
      const topLeaks = r.issues.some((i) => i.location === r.location && i.bytes !== undefined);
      const hint = topLeaks && r.format === "VDI" && r.variant !== "Fixed" ? `; 'vstor modifymedium ${r.location} --compact' gives ${r.leakedBytes === 1 ? "it" : "them"} back` : "";
      lines.push(`${r.leakedBytes} ${r.leakedBytes === 1 ? "byte is" : "bytes are"} leaked: allocated but used by no block (harmless${hint}).`);
    }
  }
  return lines.join("\n") + "\n";
}

/**
 * checkmedium: read-only consistency check. Exit 0 when the medium is usable (leaked space and
 * a modified parent are warnings: unlike `qemu-img check`, which exits 3 for leaks, since leaks
 * lose nothing), 2 when it is corrupt or its chain is broken, 1 when it cannot be checked.
 */
export async function checkmedium(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv, ["json"]);
  allowOnly(args, ["json"]);
  const target = diskTarget(args, "checkmedium [disk] FILE|UUID [--json]");
  const report = await new MediumManager().check(target);
  out(args.options.has("json") ? JSON.stringify(report) + "\n" : describeCheck(report));
  return report.corrupt ? 2 : 0;
}
