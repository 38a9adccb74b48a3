/** One archive member. Paths may start with "/" or not ("/vstor/script" == "vstor/script"). */
export interface CpioEntry {
  path: string;
  type: 'file' | 'dir' | 'symlink';
  /** Permission bits, e.g. 0o755. Defaults: file 0o644, dir 0o755, symlink 0o777. */
  mode?: number;
  /** File contents (type 'file'); a string is written as UTF-8. */
  data?: Uint8Array | ArrayBuffer | string;
  /** Link target (type 'symlink'). */
  symlink?: string;
  uid?: number;
  gid?: number;
  /** Seconds since the epoch; default 0 (reproducible output). */
  mtime?: number;
}

export interface BuildCpioOptions {
  /** First inode number (default 1). */
  inoBase?: number;
}

/**
 * Build an uncompressed newc cpio archive (the initramfs format). Missing parent
 * directories are added; a later entry with the same path wins. The result can be
 * appended to another archive: the kernel unpacks concatenated archives in order.
 */
export function buildCpio(entries: readonly CpioEntry[], options?: BuildCpioOptions): Uint8Array;

export interface CpioListEntry {
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  size: number;
  symlink?: string;
  data: Uint8Array;
}

/** Parse a newc archive (or concatenated archives) back into entries. */
export function readCpio(bytes: Uint8Array | ArrayBuffer): CpioListEntry[];
