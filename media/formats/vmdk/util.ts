/** Small helpers shared by the VMDK files: error wrapping, full reads, path joins. */
import { MediumError } from "../../block.js";
import type { FileIo } from "../../io/file-io.js";

/** A MediumError as is; anything else (a host error) as kind "io". */
export function asMediumError(e: unknown, path: string, what: string): MediumError {
  if (e instanceof MediumError) return e;
  return new MediumError("io", `${what} failed: ${e instanceof Error ? e.message : String(e)}`, { path, cause: e });
}

/** Read until `buf` is full or the file ends; resolves with the count. */
export async function readFully(file: FileIo, pos: number, buf: Uint8Array): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const n = await file.read(pos + done, buf.subarray(done));
    if (n <= 0) break;
    done += n;
  }
  return done;
}

/** The folder part of a path ("" when there is none); "/" and "\" both separate. */
export function dirOf(path: string): string {
  const i = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return i < 0 ? "" : path.slice(0, i + 1);
}

export function baseName(path: string): string {
  return path.slice(dirOf(path).length);
}

/** An extent or parent file named in a descriptor, relative to the descriptor's folder unless absolute. */
export function resolveBeside(descriptorPath: string, name: string): string {
  if (name.startsWith("/") || /^[A-Za-z]:[\\/]/.test(name)) return name;
  return dirOf(descriptorPath) + name;
}
