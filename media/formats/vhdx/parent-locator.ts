/**
 * The parent locator metadata item of a differencing VHDX (MS-VHDX 2.6.2.6), as a pure codec:
 * a 20-byte header (locator type GUID, reserved u16, key/value count u16), then 12-byte entries
 * (key offset u32, value offset u32, key length u16, value length u16; offsets from the start of
 * the item, lengths in bytes) naming UTF-16LE keys and values.
 *
 * Only the VHDX locator type is defined. Its keys: parent_linkage (required; the parent's
 * DataWriteGuid when the child was made, "{...}"), parent_linkage2 (another accepted value),
 * and at least one of relative_path, volume_path, absolute_win32_path (Windows paths, "\").
 */
import { isUuid, uuidFromGuidBytes } from "../uuid.js";
import { VhdxParseError } from "./structures.js";

export const VHDX_LOCATOR_TYPE = "b04aefb7-d19e-4a81-b789-25b8e9445913";
const HEADER_SIZE = 20;
const ENTRY_SIZE = 12;
const PATH_KEYS = ["relative_path", "volume_path", "absolute_win32_path"] as const;

export interface ParentLocator {
  /** Every key and value, as stored. */
  entries: Map<string, string>;
  /** The parent's DataWriteGuid when linked (canonical lower case, no braces). */
  linkage: string;
  linkage2: string | null;
  relativePath: string | null;
  volumePath: string | null;
  absoluteWin32Path: string | null;
}

const corrupt = (m: string): VhdxParseError => new VhdxParseError("corrupt", m);

function utf16(b: Uint8Array, at: number, length: number): string {
  let s = "";
  for (let i = at; i + 1 < at + length; i += 2) s += String.fromCharCode(b[i]! | (b[i + 1]! << 8));
  return s;
}

/** "{83ED0EC3-...}" (braces optional, any case) as a canonical UUID, or null. */
export function parseBracedGuid(text: string): string | null {
  const t = text.trim().replace(/^\{(.*)\}$/, "$1").toLowerCase();
  return isUuid(t) ? t : null;
}

/** Decode and check the item. Another locator type is `unsupported`; damage is `corrupt`. */
export function parseParentLocator(item: Uint8Array): ParentLocator {
  if (item.length < HEADER_SIZE) throw corrupt(`parent locator is ${item.length} bytes, shorter than its header`);
  const v = new DataView(item.buffer, item.byteOffset, item.byteLength);
  const type = uuidFromGuidBytes(item, 0);
  if (type !== VHDX_LOCATOR_TYPE) throw new VhdxParseError("unsupported", `parent locator type ${type} (only VHDX parents, ${VHDX_LOCATOR_TYPE}, are known)`);
  const count = v.getUint16(18, true);
  if (HEADER_SIZE + count * ENTRY_SIZE > item.length) throw corrupt(`parent locator's ${count} entries do not fit in its ${item.length} bytes`);
  const entries = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const e = HEADER_SIZE + i * ENTRY_SIZE;
    const ko = v.getUint32(e, true);
    const vo = v.getUint32(e + 4, true);
    const kl = v.getUint16(e + 8, true);
    const vl = v.getUint16(e + 10, true);
    if (kl === 0 || kl % 2 || vl % 2 || ko + kl > item.length || vo + vl > item.length) {
      throw corrupt(`parent locator entry ${i} (key ${ko}+${kl}, value ${vo}+${vl}) is outside the item or not UTF-16`);
    }
    const key = utf16(item, ko, kl);
    if (entries.has(key)) throw corrupt(`parent locator has "${key}" twice`);
    entries.set(key, utf16(item, vo, vl));
  }
  const linkText = entries.get("parent_linkage");
  if (linkText === undefined) throw corrupt("parent locator has no parent_linkage");
  const linkage = parseBracedGuid(linkText);
  if (!linkage) throw corrupt(`parent locator's parent_linkage ${JSON.stringify(linkText)} is not a GUID`);
  const link2Text = entries.get("parent_linkage2");
  const linkage2 = link2Text === undefined ? null : parseBracedGuid(link2Text);
  if (link2Text !== undefined && !linkage2) throw corrupt(`parent locator's parent_linkage2 ${JSON.stringify(link2Text)} is not a GUID`);
  if (!PATH_KEYS.some((k) => entries.get(k))) throw corrupt("parent locator names no path to the parent (relative_path, volume_path or absolute_win32_path)");
  return {
    entries,
    linkage,
    linkage2,
    relativePath: entries.get("relative_path") || null,
    volumePath: entries.get("volume_path") || null,
    absoluteWin32Path: entries.get("absolute_win32_path") || null,
  };
}

/**
 * The parent's file as this host can look for it: relative_path with "/" separators (resolved
 * against the child's folder by the caller); else the last component of the Windows paths,
 * looked for next to the child (a copied chain keeps its files together). The parent found is
 * accepted only if its DataWriteGuid matches a linkage.
 */
export function parentFileName(l: ParentLocator): string | null {
  if (l.relativePath) return l.relativePath.replace(/\\/g, "/");
  const win = l.absoluteWin32Path ?? l.volumePath;
  const base = win?.split(/[\\/]/).pop();
  return base ? base : null;
}
