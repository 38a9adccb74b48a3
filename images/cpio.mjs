// Minimal writer (and reader, for checks) of the "newc" cpio format that the
// Linux kernel unpacks as an initramfs. Plain ESM, Node built-ins only, so the
// image build and the host (which appends a small second archive carrying
// /vstor/script at boot; the kernel accepts concatenated archives) share it.
//
// newc layout: for each entry a 110-byte ASCII header ("070701" + 13 fields of
// 8 hex digits), the NUL-terminated name, padding to a multiple of 4, the data,
// padding to a multiple of 4. The archive ends with an entry named TRAILER!!!.

const S_IFMT = 0o170000;
const TYPE_BITS = { file: 0o100000, dir: 0o040000, symlink: 0o120000 };
const DEFAULT_MODE = { file: 0o644, dir: 0o755, symlink: 0o777 };
const HEADER_SIZE = 110;
const TRAILER = 'TRAILER!!!';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function pad4(n) {
  return (4 - (n % 4)) % 4;
}

function hex8(value, field) {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`cpio: ${field} out of range: ${value}`);
  }
  return value.toString(16).padStart(8, '0');
}

// Archive names are relative ("bin/sh"); the kernel resolves them from "/".
function normalizePath(p) {
  const parts = String(p).split('/').filter((s) => s !== '' && s !== '.');
  if (parts.length === 0 || parts.includes('..')) {
    throw new Error(`cpio: bad path ${JSON.stringify(p)}`);
  }
  return parts.join('/');
}

function toBytes(data) {
  if (data === undefined || data === null) return new Uint8Array(0);
  if (typeof data === 'string') return encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError('cpio: data must be a Uint8Array, ArrayBuffer or string');
}

/**
 * Build a newc cpio archive from in-memory entries.
 *
 * entries: [{ path, type: 'file'|'dir'|'symlink', mode?, data?, symlink?, uid?, gid?, mtime? }]
 * - mode: permission bits (e.g. 0o755); type bits, if present, are ignored.
 * - Missing parent directories are added (mode 0755) so that a tiny archive
 *   such as [{path: '/vstor/script', ...}] unpacks on its own.
 * - A later entry with the same path replaces an earlier one.
 * Output is deterministic (mtime defaults to 0, inodes are numbered in order).
 * options.inoBase: first inode number (default 1); irrelevant unless hardlinks.
 */
export function buildCpio(entries, options = {}) {
  const byPath = new Map();
  const addDirs = (p) => {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (!byPath.has(dir)) byPath.set(dir, { path: dir, type: 'dir', mode: 0o755 });
    }
  };
  for (const e of entries) {
    if (!e || !TYPE_BITS[e.type]) throw new Error(`cpio: bad entry type ${e && e.type} for ${e && e.path}`);
    const p = normalizePath(e.path);
    addDirs(p);
    byPath.set(p, { ...e, path: p });
  }

  const chunks = [];
  let total = 0;
  let ino = options.inoBase ?? 1;
  const push = (bytes) => {
    chunks.push(bytes);
    total += bytes.length;
  };
  const writeEntry = (name, mode, nlink, data, e = {}) => {
    const nameBytes = encoder.encode(name + '\0');
    const fields = [
      hex8(ino++, 'ino'),
      hex8(mode, 'mode'),
      hex8(e.uid ?? 0, 'uid'),
      hex8(e.gid ?? 0, 'gid'),
      hex8(nlink, 'nlink'),
      hex8(e.mtime ?? 0, 'mtime'),
      hex8(data.length, 'filesize'),
      '00000000', // devmajor
      '00000000', // devminor
      '00000000', // rdevmajor
      '00000000', // rdevminor
      hex8(nameBytes.length, 'namesize'),
      '00000000', // check (only used by the "070702" crc variant)
    ];
    push(encoder.encode('070701' + fields.join('')));
    push(nameBytes);
    push(new Uint8Array(pad4(HEADER_SIZE + nameBytes.length)));
    if (data.length) {
      push(data);
      push(new Uint8Array(pad4(data.length)));
    }
  };

  // Parents sort before children, which the kernel needs (it does not create
  // missing parent directories itself).
  const sorted = [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const e of sorted) {
    const perm = (e.mode ?? DEFAULT_MODE[e.type]) & ~S_IFMT & 0o7777;
    const mode = TYPE_BITS[e.type] | perm;
    if (e.type === 'file') {
      writeEntry(e.path, mode, 1, toBytes(e.data), e);
    } else if (e.type === 'dir') {
      writeEntry(e.path, mode, 2, new Uint8Array(0), e);
    } else {
      if (typeof e.symlink !== 'string' || e.symlink === '') throw new Error(`cpio: symlink ${e.path} needs a target`);
      writeEntry(e.path, mode, 1, encoder.encode(e.symlink), e);
    }
  }
  writeEntry(TRAILER, 0, 1, new Uint8Array(0));

  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/**
 * List the entries of a newc archive (or several concatenated ones, with
 * optional zero padding between them). For tests and sanity checks.
 * Returns [{ path, type, mode, size, symlink?, data }].
 */
export function readCpio(bytes) {
  const buf = toBytes(bytes);
  const out = [];
  let off = 0;
  while (off < buf.length) {
    if (buf[off] === 0) {
      off++; // padding between concatenated archives
      continue;
    }
    const magic = decoder.decode(buf.subarray(off, off + 6));
    if (magic !== '070701' && magic !== '070702') throw new Error(`cpio: bad magic at ${off}`);
    const field = (i) => parseInt(decoder.decode(buf.subarray(off + 6 + i * 8, off + 14 + i * 8)), 16);
    const mode = field(1);
    const size = field(6);
    const namesize = field(11);
    const nameStart = off + HEADER_SIZE;
    const name = decoder.decode(buf.subarray(nameStart, nameStart + namesize - 1));
    const dataStart = nameStart + namesize + pad4(HEADER_SIZE + namesize);
    const data = buf.subarray(dataStart, dataStart + size);
    off = dataStart + size + pad4(size);
    if (name === TRAILER) continue;
    const fmt = mode & S_IFMT;
    const type = fmt === TYPE_BITS.dir ? 'dir' : fmt === TYPE_BITS.symlink ? 'symlink' : fmt === TYPE_BITS.file ? 'file' : 'other';
    const entry = { path: name, type, mode: mode & 0o7777, size, data };
    if (type === 'symlink') entry.symlink = decoder.decode(data);
    out.push(entry);
  }
  return out;
}
