/**
 * What a format backend needs from a file: positioned async reads and writes with many in
 * flight, a flush barrier, size and truncate. Pure interface (no Node types): the Node
 * implementation lives in media/io/node/, a test one in memory, so codecs and backends run
 * anywhere and can be fuzzed without files.
 */
export interface FileIo {
  /** For error messages. */
  readonly path: string;
  readonly readOnly: boolean;
  /** Read up to buf.length bytes at pos; resolves with the count (short only at end of file). */
  read(pos: number, buf: Uint8Array): Promise<number>;
  /** Write all of buf at pos (the file grows as needed). */
  write(pos: number, buf: Uint8Array): Promise<void>;
  /** Durable: everything written before this call is on stable storage when it resolves. */
  flush(): Promise<void>;
  size(): Promise<number>;
  truncate(length: number): Promise<void>;
  /** Give the range's space back to the host where it can (punch a hole); contents become zero. */
  punchHole?(pos: number, length: number): Promise<void>;
  close(): Promise<void>;
  /**
   * Synchronous read, for a front end allowed to complete in the CPU loop (IDE): the count, or
   * undefined when it cannot be done synchronously now (the caller uses read()). Throws what
   * read() would reject with. Offered only where it is cheap (page-cached files).
   */
  readSync?(pos: number, buf: Uint8Array): number | undefined;
  /** Synchronous write: true when done, false when it cannot be done now. */
  writeSync?(pos: number, buf: Uint8Array): boolean;
}

export interface OpenOptions {
  readOnly?: boolean;
  /** Create the file; fail if it exists. */
  create?: boolean;
  /** Bypass the host page cache where the platform allows it (host I/O cache off). */
  direct?: boolean;
}

/** Opens files for backends; injected so tests can use memory and fault wrappers. */
export interface FileOpener {
  open(path: string, options?: OpenOptions): Promise<FileIo>;
  exists(path: string): Promise<boolean>;
  remove(path: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
}

/**
 * An opener that bypasses the host page cache for every file it opens (a controller with host
 * I/O cache off): the same files, opened with `direct: true`.
 */
export function withoutHostCache(inner: FileOpener): FileOpener {
  return {
    open: (path, options = {}) => inner.open(path, { ...options, direct: true }),
    exists: (path) => inner.exists(path),
    remove: (path) => inner.remove(path),
    rename: (from, to) => inner.rename(from, to),
  };
}
