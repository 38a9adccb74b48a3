/**
 * Medium verbs, VBoxManage-style: createmedium, showmediuminfo, closemedium, list hdds,
 * modifymedium (--resize, --compact).
 */
import { allowOnly, optNumber, optString, parseArgs, requireOpt, UsageError } from "./args.js";
import { MediumManager, type MediumFormat, type MediumInfo } from "../media/medium-manager.js";
import type { Out } from "./vm-verbs.js";

const MiB = 1024 * 1024;

function formatOpt(v: string | undefined): MediumFormat | undefined {
  if (v === undefined) return undefined;
  const f = v.toUpperCase();
  if (f !== "VDI" && f !== "RAW") throw new UsageError(`--format ${v}: supported formats are VDI and RAW`);
  return f;
}

function describe(m: MediumInfo): string {
  return [
    `UUID:           ${m.uuid}`,
    ...(m.parentUuid ? [`Parent UUID:    ${m.parentUuid}`] : ["Parent UUID:    base"]),
    `State:          created`,
    `Location:       ${m.location}`,
    `Storage format: ${m.format}`,
    `Format variant: ${m.variant === "Fixed" ? "fixed default" : m.variant === "Diff" ? "differencing default" : "dynamic default"}`,
    `Capacity:       ${Math.round(m.size / MiB)} MBytes`,
    `Size on disk:   ${Math.round(m.fileSize / MiB)} MBytes`,
    ...(m.children.length ? [`Child UUIDs:    ${m.children.join("\n                ")}`] : []),
    "",
  ].join("\n");
}

export async function createmedium(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv, ["json"]);
  allowOnly(args, ["filename", "size", "sizebyte", "format", "variant", "diffparent", "json"]);
  const [kind = "disk"] = args.positional;
  if (kind !== "disk") throw new UsageError(`createmedium ${kind}: only 'disk' is supported`);
  const path = requireOpt(args, "filename");
  const sizeMb = optNumber(args, "size");
  const sizeBytes = optNumber(args, "sizebyte");
  const variant = optString(args, "variant") ?? "Standard";
  if (variant !== "Standard" && variant !== "Fixed") throw new UsageError(`--variant ${variant}: Standard or Fixed`);
  const parent = optString(args, "diffparent");
  if (!parent && sizeMb === undefined && sizeBytes === undefined) throw new UsageError("--size MB (or --sizebyte) is required");
  const info = await new MediumManager().create({
    path,
    format: formatOpt(optString(args, "format")),
    size: sizeBytes ?? (sizeMb !== undefined ? sizeMb * MiB : undefined),
    variant,
    parent,
  });
  out(args.options.has("json") ? JSON.stringify(info) + "\n" : `Medium created. UUID: ${info.uuid}\n`);
  return 0;
}

export async function showmediuminfo(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv, ["json"]);
  allowOnly(args, ["json"]);
  const [kind, target] = args.positional.length === 2 ? args.positional : ["disk", args.positional[0]];
  if (!target || (kind !== "disk" && kind !== "hdd")) throw new UsageError("showmediuminfo [disk] FILE|UUID");
  const mm = new MediumManager();
  const info = mm.registry.find(target) ? await mm.info(target) : await mm.register(target);
  out(args.options.has("json") ? JSON.stringify(info) + "\n" : describe(info));
  return 0;
}

export async function closemedium(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv, ["delete"]);
  allowOnly(args, ["delete"]);
  const [kind, target] = args.positional.length === 2 ? args.positional : ["disk", args.positional[0]];
  if (!target || (kind !== "disk" && kind !== "hdd")) throw new UsageError("closemedium [disk] FILE|UUID [--delete]");
  const rec = await new MediumManager().close(target, { delete: args.options.has("delete") });
  out(`Medium ${rec.location} {${rec.uuid}} closed${args.options.has("delete") ? " and deleted" : ""}.\n`);
  return 0;
}

export async function listHdds(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv, ["json"]);
  allowOnly(args, ["json"]);
  const mm = new MediumManager();
  const infos: MediumInfo[] = [];
  for (const rec of mm.registry.list("hdd")) infos.push(await mm.info(rec.uuid));
  if (args.options.has("json")) {
    out(JSON.stringify(infos) + "\n");
    return 0;
  }
  out(
    infos
      .map((m) =>
        [`UUID:           ${m.uuid}`, `Parent UUID:    ${m.parentUuid ?? "base"}`, `Format:         ${m.format}`, `Location:       ${m.location}`, `Capacity:       ${Math.round(m.size / MiB)} MBytes`, ""].join("\n"),
      )
      .join("\n"),
  );
  return 0;
}

export async function modifymedium(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv, ["compact"]);
  allowOnly(args, ["resize", "resizebyte", "compact"]);
  const [kind, target] = args.positional.length === 2 ? args.positional : ["disk", args.positional[0]];
  if (!target || (kind !== "disk" && kind !== "hdd")) throw new UsageError("modifymedium [disk] FILE|UUID --resize MB | --compact");
  const mm = new MediumManager();
  const mb = optNumber(args, "resize");
  const bytes = optNumber(args, "resizebyte") ?? (mb !== undefined ? mb * MiB : undefined);
  if (bytes === undefined && !args.options.has("compact")) throw new UsageError("modifymedium needs --resize, --resizebyte or --compact");
  if (!mm.registry.find(target)) await mm.register(target);
  if (bytes !== undefined) {
    await mm.resize(target, bytes);
    out(`Resized to ${bytes} bytes.\n`);
  }
  if (args.options.has("compact")) {
    await mm.compact(target);
    out("Compacted.\n");
  }
  return 0;
}
