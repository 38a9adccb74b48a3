/**
 * checkmedium: a medium (registered, or any file) checked without writing to it or to the
 * registry: a VDI's structure (corruption apart from leaked space, see vdi-check.ts) and, for a
 * differencing image, its chain: each parent registered, intact, carrying the UUID the child
 * names, and not modified after the child was linked (a warning). Other formats are checked by
 * their file checker where they have one, then by opening them read-only.
 */
import { MediumError } from "./block.js";
import { ImageChain, MAX_CHAIN_DEPTH, type LayeredImage } from "./chain.js";
import type { FileOpener } from "./io/file-io.js";
import { checkVdi, type VdiCheckReport } from "./formats/vdi/vdi-check.js";
import { asLayer, fileChecker, FORMATS, probeFormat, rawCheckReport, type MediumFormat } from "./formats.js";
import { canonicalLocation, type MediumRecord } from "./registry.js";
import type { CheckIssue, MediumCheckReport, MediumManager } from "./medium-manager.js";

/**
 * Check a medium (registered, or any file) without writing to it or to the registry: a VDI's
 * structure (corruption apart from leaked space, see vdi-check.ts) and, for a differencing
 * image, its chain: each parent registered, intact, carrying the UUID the child names, and not
 * modified after the child was linked (a warning). A raw image only has its size to check.
 */
export async function checkMedium(mm: MediumManager, uuidOrPath: string): Promise<MediumCheckReport> {
  const rec = mm.registry.find(uuidOrPath);
  const path = rec?.location ?? uuidOrPath;
  const location = canonicalLocation(path);
  const { format: kind, damaged } = await probeFormat(mm.opener, location);
  if (kind !== "VDI" && kind !== "RAW") return checkByOpening(mm, kind, damaged, location, rec);
  if (kind === "RAW") return rawCheckReport(location, await fileSize(mm.opener, location), rec?.uuid);

  const issues: CheckIssue[] = [];
  const reports: VdiCheckReport[] = [];
  const leaks = (r: VdiCheckReport, loc: string): void => {
    for (const l of r.leaks) issues.push({ severity: "warning", code: l.kind, location: loc, message: `${loc}: ${l.message}`, bytes: l.bytes });
  };
  const top = await checkVdiFile(mm.opener, location);
  reports.push(top);
  const report: MediumCheckReport = {
    location,
    format: "VDI",
    registered: !!rec,
    fileSize: top.fileSize,
    chain: [],
    corrupt: false,
    leakedBytes: 0,
    issues,
    vdi: reports,
  };
  if (!top.image) {
    issues.push({ severity: "error", code: top.corruption!.kind, location, message: top.corruption!.message });
  } else {
    const img = top.image;
    Object.assign(report, { uuid: img.uuid, size: img.size, variant: img.variant === "fixed" ? "Fixed" : img.variant === "diff" ? "Diff" : "Standard" });
    leaks(top, location);
    if (rec && rec.uuid !== img.uuid) {
      issues.push({
        severity: "warning",
        code: "registry-mismatch",
        location,
        message: `${location} is registered as {${rec.uuid}} but carries {${img.uuid}}`,
      });
    }
    const known = mm.registry.findByUuid(img.uuid);
    if (known && known.location !== location) {
      issues.push({
        severity: "warning",
        code: "duplicate-uuid",
        location,
        message: `${location}: its UUID {${img.uuid}} is registered for ${known.location}; vstor refuses to open this file while that one is registered`,
      });
    }
    await checkParents(mm, top, location, report, (r, loc) => {
      reports.push(r);
      leaks(r, loc);
    });
  }
  report.corrupt = issues.some((i) => i.severity === "error");
  report.leakedBytes = reports.reduce((n, r) => n + r.leakedBytes, 0);
  return report;
}

/**
 * Formats other than VDI: usable when the medium (with its chain) opens read-only, corrupt
 * with the error the open refuses it with. Leaks are not counted here.
 */
async function checkByOpening(mm: MediumManager, format: MediumFormat, damaged: boolean, location: string, rec: MediumRecord | undefined): Promise<MediumCheckReport> {
  const issues: CheckIssue[] = [];
  const report: MediumCheckReport = { location, format, registered: !!rec, fileSize: await fileSize(mm.opener, location), chain: [], corrupt: false, leakedBytes: 0, issues };
  const checker = fileChecker(format);
  if (!damaged && checker) {
    const file = await mm.opener.open(location, { readOnly: true });
    try {
      const found = await checker(file);
      for (const e of found.errors) issues.push({ severity: "error", code: e.kind, location, message: `${location}: ${e.message}` });
      for (const w of found.warnings) issues.push({ severity: "warning", code: "leak", location, message: `${location}: ${w}` });
      report.leakedBytes = found.leakedBytes;
    } finally {
      await file.close();
    }
  }
  if (damaged) {
    issues.push({ severity: "error", code: "corrupt", location, message: `${location}: looks like a ${format} image but its signature is damaged` });
  } else if (!issues.some((i) => i.severity === "error")) {
    try {
      const b = await mm.open(location, { readOnly: true });
      try {
        const layers = b instanceof ImageChain ? b.layers : [b];
        Object.assign(report, { uuid: asLayer(layers[0]!)?.uuid ?? rec?.uuid, size: b.size, variant: await FORMATS[format].variantOf(layers[0]!) });
        report.chain = (layers.slice(1) as LayeredImage[]).map((l) => ({ uuid: l.uuid, location: canonicalLocation(l.path) }));
      } finally {
        await b.close();
      }
    } catch (e) {
      if (!(e instanceof MediumError)) throw e;
      issues.push({ severity: "error", code: e.kind, location, message: `${location}: ${e.message}` });
    }
  }
  report.corrupt = issues.some((i) => i.severity === "error");
  return report;
}

async function checkVdiFile(opener: FileOpener, path: string): Promise<VdiCheckReport> {
  const f = await opener.open(path, { readOnly: true });
  try {
    return await checkVdi(f);
  } finally {
    await f.close();
  }
}

/** Walk a differencing image's parents through the registry, adding issues to `report`. */
async function checkParents(
mm: MediumManager,
  top: VdiCheckReport,
  location: string,
  report: MediumCheckReport,
  checked: (r: VdiCheckReport, location: string) => void,
): Promise<void> {
  const error = (code: string, loc: string, message: string): void => void report.issues.push({ severity: "error", code, location: loc, message });
  const seen = new Set<string>([top.image!.uuid]);
  let child = top.image!;
  let childLoc = location;
  while (child.parentUuid) {
    const uuid = child.parentUuid;
    if (report.chain.length + 1 >= MAX_CHAIN_DEPTH) return error("unsupported", location, `${location}: its chain is deeper than ${MAX_CHAIN_DEPTH} images`);
    if (seen.has(uuid)) return error("corrupt", childLoc, `${childLoc}: the chain loops back to {${uuid}}`);
    seen.add(uuid);
    const prec = mm.registry.findByUuid(uuid);
    if (!prec) {
      return error("not-found", childLoc, `${childLoc}: its parent {${uuid}} is not registered (register the parent with 'vstor showmediuminfo FILE')`);
    }
    const ploc = prec.location;
    if (prec.format !== "VDI") return error("corrupt", childLoc, `${childLoc}: its parent {${uuid}} is registered as a ${prec.format} image, ${ploc}`);
    let parent: VdiCheckReport;
    try {
      parent = await checkVdiFile(mm.opener, ploc);
    } catch (e) {
      if (e instanceof MediumError && e.kind === "not-found") return error("not-found", ploc, `${childLoc}: its parent {${uuid}} is registered at ${ploc}, which is not there`);
      throw e;
    }
    checked(parent, ploc);
    report.chain.push({ uuid, location: ploc });
    if (!parent.image) return error(parent.corruption!.kind, ploc, `parent of ${childLoc}: ${parent.corruption!.message}`);
    if (parent.image.uuid !== uuid) {
      return error("corrupt", ploc, `${childLoc}: its parent {${uuid}} is registered at ${ploc}, which carries {${parent.image.uuid}}`);
    }
    if (child.parentModifyUuid !== parent.image.modifyUuid) {
      report.issues.push({
        severity: "warning",
        code: "parent-modified",
        location: childLoc,
        message:
          `${childLoc}: its parent ${ploc} was modified after the child was made (recorded {${child.parentModifyUuid}}, now {${parent.image.modifyUuid}}); ` +
          `opening the chain read-write is refused`,
      });
    }
    child = parent.image;
    childLoc = ploc;
  }
}

async function fileSize(opener: FileOpener, path: string): Promise<number> {
  const f = await opener.open(path, { readOnly: true });
  try {
    return await f.size();
  } finally {
    await f.close();
  }
}
