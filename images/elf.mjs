// Just enough ELF32 (little-endian, i386) parsing for the image build: kernel
// module .modinfo, and the DT_NEEDED / PT_INTERP of guest executables. The host
// tools (depmod, ldd) can't be used: they don't know i386 or aren't installed.

const SHT_DYNAMIC = 6;
const PT_INTERP = 3;
const DT_NULL = 0;
const DT_NEEDED = 1;
const MODULE_SIG_MARKER = '~Module signature appended~\n';

export function isElf(buf) {
  return buf.length >= 52 && buf[0] === 0x7f && buf[1] === 0x45 && buf[2] === 0x4c && buf[3] === 0x46;
}

function view(buf) {
  if (!isElf(buf)) throw new Error('not an ELF file');
  if (buf[4] !== 1 || buf[5] !== 1) throw new Error('not a little-endian ELF32 file');
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

function cstring(buf, off) {
  let end = off;
  while (end < buf.length && buf[end] !== 0) end++;
  return buf.toString('latin1', off, end);
}

function sections(buf) {
  const dv = view(buf);
  const shoff = dv.getUint32(32, true);
  const shentsize = dv.getUint16(46, true);
  const shnum = dv.getUint16(48, true);
  const shstrndx = dv.getUint16(50, true);
  const list = [];
  for (let i = 0; i < shnum; i++) {
    const o = shoff + i * shentsize;
    list.push({
      nameOff: dv.getUint32(o, true),
      type: dv.getUint32(o + 4, true),
      offset: dv.getUint32(o + 16, true),
      size: dv.getUint32(o + 20, true),
      link: dv.getUint32(o + 24, true),
    });
  }
  const strtab = list[shstrndx];
  for (const s of list) s.name = strtab ? cstring(buf, strtab.offset + s.nameOff) : '';
  return list;
}

/** Key/value pairs of a kernel module's .modinfo section; repeated keys (alias) become arrays. */
export function readModinfo(buf) {
  const sec = sections(buf).find((s) => s.name === '.modinfo');
  const info = {};
  if (!sec) return info;
  const text = buf.toString('latin1', sec.offset, sec.offset + sec.size);
  for (const item of text.split('\0')) {
    const eq = item.indexOf('=');
    if (eq <= 0) continue;
    const key = item.slice(0, eq);
    const val = item.slice(eq + 1);
    if (key in info) info[key] = [].concat(info[key], val);
    else info[key] = val;
  }
  return info;
}

/** The module with its appended signature removed (unsigned modules load fine, and faster). */
export function stripModuleSignature(buf) {
  const marker = Buffer.from(MODULE_SIG_MARKER, 'latin1');
  if (buf.length < marker.length + 12 || !buf.subarray(buf.length - marker.length).equals(marker)) return buf;
  // struct module_signature (12 bytes) precedes the marker; sig_len is its last field, big-endian.
  const infoEnd = buf.length - marker.length;
  const sigLen = buf.readUInt32BE(infoEnd - 4);
  const start = infoEnd - 12 - sigLen;
  if (start <= 0) return buf;
  return buf.subarray(0, start);
}

/** DT_NEEDED sonames and the PT_INTERP path of a dynamically linked ELF (empty for static). */
export function readDynamicInfo(buf) {
  const dv = view(buf);
  const needed = [];
  let interp = null;
  const phoff = dv.getUint32(28, true);
  const phentsize = dv.getUint16(42, true);
  const phnum = dv.getUint16(44, true);
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    if (dv.getUint32(o, true) === PT_INTERP) interp = cstring(buf, dv.getUint32(o + 4, true));
  }
  const secs = sections(buf);
  const dyn = secs.find((s) => s.type === SHT_DYNAMIC);
  if (dyn) {
    const strtab = secs[dyn.link];
    for (let o = dyn.offset; o + 8 <= dyn.offset + dyn.size; o += 8) {
      const tag = dv.getInt32(o, true);
      if (tag === DT_NULL) break;
      if (tag === DT_NEEDED) needed.push(cstring(buf, strtab.offset + dv.getUint32(o + 4, true)));
    }
  }
  return { needed, interp };
}
