/**
 * Test helper: a FileIo (or a whole opener's files) that remembers every write it was given,
 * with the very buffer passed in, so a test can tell a write made from the caller's buffer from
 * one made from a copy, and see the order and size of the writes a backend issues.
 */
import type { FileIo, FileOpener, OpenOptions } from "../io/file-io.js";

export interface LoggedWrite {
  path: string;
  pos: number;
  /** The buffer given to write(), not a copy. */
  data: Uint8Array;
}

/** Wraps `inner`, logging each write when it is issued (before the inner file sees it). */
export function loggedFile(inner: FileIo, log: LoggedWrite[]): FileIo {
  const file: FileIo = {
    get path() {
      return inner.path;
    },
    get readOnly() {
      return inner.readOnly;
    },
    read: (pos, buf) => inner.read(pos, buf),
    write: (pos, data) => {
      log.push({ path: inner.path, pos, data });
      return inner.write(pos, data);
    },
    flush: () => inner.flush(),
    size: () => inner.size(),
    truncate: (length) => inner.truncate(length),
    close: () => inner.close(),
  };
  return file;
}

/** An opener whose files log their writes into `log`. */
export function loggedOpener(inner: FileOpener, log: LoggedWrite[]): FileOpener {
  return {
    open: async (path: string, options?: OpenOptions) => loggedFile(await inner.open(path, options), log),
    exists: (path) => inner.exists(path),
    remove: (path) => inner.remove(path),
    rename: (from, to) => inner.rename(from, to),
  };
}

/** The logged writes' buffers that are views of `buf`'s memory (no copy was made). */
export function sharing(log: readonly LoggedWrite[], buf: Uint8Array): LoggedWrite[] {
  return log.filter((w) => w.data.buffer === buf.buffer);
}

/** `a` views exactly the bytes of `b` (the same memory, not a copy). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.buffer === b.buffer && a.byteOffset === b.byteOffset && a.length === b.length;
}
