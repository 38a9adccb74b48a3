/** Helpers every format's file code uses: host errors as MediumError, and reads that fill a buffer. */
import { MediumError } from "../block.js";
import type { FileIo } from "../io/file-io.js";

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
