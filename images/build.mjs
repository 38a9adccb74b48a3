#!/usr/bin/env node
// Builds the vstor Linux test guest from Debian bookworm i386 packages:
//   build/guest/vmlinuz      Debian's 686 kernel
//   build/guest/initrd.img   uncompressed newc cpio: busybox, storage modules,
//                            disk tools with their libraries, /init agent
//   build/guest/bios.bin     SeaBIOS bios-256k.bin (has the LSI MPT-SCSI driver)
//   build/guest/vgabios.bin  SeaBIOS vgabios-stdvga.bin
//   build/guest/boot.img     a bootable raw disk: MBR (syslinux mbr.bin), one FAT16
//                            partition with syslinux, the kernel and the initramfs
//   build/guest/boot.iso     a bootable El Torito CD with isolinux, the kernel and the initramfs
//                            (both boot media: images/boot-media.mjs)
//   build/guest/manifest.json
// Usage: node images/build.mjs [--force] [--refresh]
//   --force    rebuild even if the output is up to date
//   --refresh  apt-get update the i386 package lists first (pick up new versions)
// Env: VSTOR_CACHE (default ~/.cache/vstor) holds apt lists and .debs.
// Only Node built-ins; host programs used: apt-get, apt-cache, dpkg-deb, dpkg-query, gcc,
// and for the boot media syslinux, mkfs.vfat, mcopy/mdir, genisoimage and isoinfo (no loop mounts).

import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { aptInstallHost, ENV, fail, have, log, run, runOrFail, sha256 } from './build-util.mjs';
import { bootMediaUpToDate, ensureBootTools, setBootCmdline, writeBootMedia } from './boot-media.mjs';
import { buildCpio } from './cpio.mjs';
import { isElf, readDynamicInfo, readModinfo, stripModuleSignature } from './elf.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..');
const OUT = path.join(REPO, 'build', 'guest');
const CACHE = path.resolve(process.env.VSTOR_CACHE || path.join(os.homedir(), '.cache', 'vstor'));
const APT_DIR = path.join(CACHE, 'apt-i386');
const DEB_DIR = path.join(CACHE, 'debs');

// Bump when the output changes in a way the hash of images/ would not catch.
const FORMAT = 1;

// The kernel is found through this metapackage (its Depends names the current ABI).
const KERNEL_META = 'linux-image-686';

// Guest programs: package -> files to copy (globs: '*' in the last component).
// Symlinks in the package that point at a copied file come along (mkfs.ext4 -> mke2fs).
const TOOLS = [
  { pkg: 'hdparm', files: ['sbin/hdparm'] },
  { pkg: 'sg3-utils', files: ['usr/bin/sg_*', 'usr/bin/sginfo', 'usr/bin/sgm_dd', 'usr/bin/sgp_dd'] },
  { pkg: 'fdisk', files: ['sbin/sfdisk', 'sbin/fdisk'] },
  { pkg: 'util-linux', files: ['sbin/blkdiscard', 'sbin/blkid', 'sbin/blkzone', 'sbin/wipefs'] },
  {
    pkg: 'e2fsprogs',
    files: ['sbin/mke2fs', 'sbin/mkfs.ext*', 'sbin/e2fsck', 'sbin/fsck.ext*', 'sbin/tune2fs', 'sbin/dumpe2fs',
      'sbin/resize2fs', 'sbin/debugfs', 'etc/mke2fs.conf'],
  },
  { pkg: 'dosfstools', files: ['sbin/mkfs.fat', 'sbin/mkfs.vfat', 'sbin/mkdosfs', 'sbin/fsck.fat', 'sbin/fsck.vfat'] },
  // smartctl checks our SMART commands as a real user would; it brings libstdc++ and
  // libselinux (~3.5 MB of the uncompressed initramfs).
  { pkg: 'smartmontools', files: ['usr/sbin/smartctl'] },
  // Left out on purpose: lsblk pulls libmount/libselinux/libpcre2/libudev (~1.7 MB).
];
const BUSYBOX_PKG = 'busybox-static';
const BIOS_PKG = 'seabios';

// Storage drivers and filesystems; their dependencies are added from .modinfo.
// (ext2 is served by ext4: CONFIG_EXT4_USE_FOR_EXT2.)
const MODULES = [
  'sd_mod', 'sr_mod', 'sg',
  'libata', 'ahci', 'ata_piix', 'ata_generic',
  'scsi_transport_spi', 'scsi_transport_sas',
  'mptbase', 'mptscsih', 'mptspi', 'mptsas', 'BusLogic',
  'loop', 'isofs', 'ext4', 'crc32c_generic', 'vfat', 'nls_cp437', 'nls_iso8859-1', 'nls_ascii', 'nls_utf8',
  // A generic PCI driver the host-adapter tests bind to the test fixture (INTx through a real driver).
  'uio_pci_generic',
];

// The kernel command line the host is expected to use (recorded in the manifest).
const RECOMMENDED_CMDLINE =
  'console=ttyS0 tsc=reliable mitigations=off random.trust_cpu=on cryptomgr.notests noisapnp';
setBootCmdline(RECOMMENDED_CMDLINE);

function ensureAptTools() {
  for (const t of ['apt-get', 'apt-cache', 'dpkg-deb']) {
    if (!have(t)) fail(`${t} not found: this build needs a Debian-like host`);
  }
}

// ---------------------------------------------------------------------------
// i386 package lists, separate from the host's dpkg/apt state

function aptOpts() {
  return [
    '-o', 'APT::Architecture=i386',
    '-o', 'APT::Architectures=i386',
    '-o', `Dir::State::Lists=${path.join(APT_DIR, 'lists')}`,
    '-o', `Dir::State::status=${path.join(APT_DIR, 'status')}`,
    '-o', `Dir::Cache=${path.join(APT_DIR, 'cache')}`,
    '-o', 'Acquire::Languages=none',
    '-o', 'APT::Sandbox::User=root',
    '-q',
  ];
}

function listsPresent() {
  const dir = path.join(APT_DIR, 'lists');
  return fs.existsSync(dir) && fs.readdirSync(dir).some((f) => /_Packages(\.|$)/.test(f) && /i386/.test(f));
}

function aptUpdate() {
  fs.mkdirSync(path.join(APT_DIR, 'lists', 'partial'), { recursive: true });
  fs.mkdirSync(path.join(APT_DIR, 'cache', 'archives', 'partial'), { recursive: true });
  if (!fs.existsSync(path.join(APT_DIR, 'status'))) fs.writeFileSync(path.join(APT_DIR, 'status'), '');
  log('apt-get update (i386 lists)');
  // Exit code not trusted: a single index may fail (e.g. a size mismatch while a
  // mirror syncs); resolution below checks that what we need is there.
  const r = run('apt-get', [...aptOpts(), 'update']);
  if (!listsPresent()) fail(`apt-get update produced no i386 package lists:\n${r.stderr}`);
}

// `apt-cache show` for the candidate versions of names; missing names are absent from the map.
function aptShow(names) {
  const found = new Map();
  if (!names.length) return found;
  const r = run('apt-cache', [...aptOpts(), 'show', '--no-all-versions', ...names]);
  for (const stanza of r.stdout.split(/\n\n+/)) {
    const fields = {};
    let last = null;
    for (const line of stanza.split('\n')) {
      if (/^\s/.test(line) && last) fields[last] += '\n' + line;
      else {
        const m = /^([\w-]+):\s?(.*)$/.exec(line);
        if (m) fields[(last = m[1])] = m[2];
      }
    }
    if (fields.Package && fields.Version && !found.has(fields.Package)) {
      found.set(fields.Package, {
        name: fields.Package,
        version: fields.Version,
        arch: fields.Architecture,
        depends: [fields['Pre-Depends'], fields.Depends].filter(Boolean).join(', '),
        sha256: fields.SHA256,
        size: Number(fields.Size),
      });
    }
  }
  return found;
}

// "a (>= 1) | b:any, c" -> [['a','b'], ['c']]
function parseDepends(text) {
  return text
    .split(',')
    .map((g) => g.split('|').map((alt) => alt.trim().split(/[\s(:]/)[0]).filter(Boolean))
    .filter((g) => g.length);
}

const isLibName = (n) => /^(lib|zlib)/.test(n);

// Resolve every package we need to {name -> stanza}. Tools pull in the library
// packages among their (pre-)dependencies, recursively; which of those files are
// really used is decided later from DT_NEEDED.
function resolvePackages() {
  const meta = aptShow([KERNEL_META]).get(KERNEL_META);
  if (!meta) fail(`${KERNEL_META} not found in the i386 lists (try --refresh)`);
  const abi = parseDepends(meta.depends).map((g) => g[0]).find((n) => /^linux-image-\d/.test(n));
  if (!abi) fail(`cannot find the kernel ABI package in ${KERNEL_META}'s Depends: ${meta.depends}`);
  // Prefer the -unsigned build (same kernel; i386 has no signed variant in practice).
  const kernelNames = [`${abi}-unsigned`, abi];

  const roots = [BUSYBOX_PKG, BIOS_PKG, ...TOOLS.map((t) => t.pkg)];
  const first = aptShow([...kernelNames, ...roots]);
  const kernel = first.get(kernelNames[0]) || first.get(kernelNames[1]);
  if (!kernel) fail(`kernel package ${kernelNames.join(' / ')} not found (try --refresh)`);
  const missing = roots.filter((n) => !first.has(n));
  if (missing.length) fail(`packages not found in the i386 lists: ${missing.join(' ')} (try --refresh)`);

  const pkgs = new Map([[kernel.name, kernel]]);
  for (const n of roots) pkgs.set(n, first.get(n));

  const known = new Map(first); // name -> stanza, or null when not available
  let frontier = TOOLS.map((t) => pkgs.get(t.pkg));
  while (frontier.length) {
    const groups = frontier.flatMap((p) => parseDepends(p.depends)).filter((g) => isLibName(g[0]));
    const unknown = [...new Set(groups.flat().filter((n) => isLibName(n) && !known.has(n)))];
    const got = aptShow(unknown);
    for (const n of unknown) known.set(n, got.get(n) || null);
    frontier = [];
    for (const g of groups) {
      const pick = g.map((n) => known.get(n)).find(Boolean);
      if (!pick) fail(`no installable alternative for dependency ${g.join(' | ')}`);
      if (!pkgs.has(pick.name)) {
        pkgs.set(pick.name, pick);
        frontier.push(pick);
      }
    }
  }
  return { pkgs, kernelPkg: kernel.name };
}

// Resolution takes several apt-cache runs (~1 s each without a pkgcache); reuse
// the last result while the lists and this script are unchanged.
function resolveCached() {
  const listDir = path.join(APT_DIR, 'lists');
  const stamp = sha256(JSON.stringify({
    lists: fs.readdirSync(listDir).filter((f) => /_(In)?Release$|_Packages/.test(f)).sort()
      .map((f) => [f, fs.statSync(path.join(listDir, f)).size, fs.statSync(path.join(listDir, f)).mtimeMs]),
    script: sha256(fs.readFileSync(fileURLToPath(import.meta.url))),
  }));
  const file = path.join(APT_DIR, 'resolved.json');
  try {
    const c = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (c.stamp === stamp) return { pkgs: new Map(c.pkgs.map((p) => [p.name, p])), kernelPkg: c.kernelPkg };
  } catch {
    // no usable cache: resolve below
  }
  const r = resolvePackages();
  fs.writeFileSync(file, JSON.stringify({ stamp, kernelPkg: r.kernelPkg, pkgs: [...r.pkgs.values()] }, null, 1));
  return r;
}

function debPath(p) {
  return path.join(DEB_DIR, `${p.name}_${p.version.replace(/:/g, '%3a')}_${p.arch}.deb`);
}

// Download the missing .debs into the cache. Returns false if apt-get failed.
function downloadDebs(pkgs) {
  const missing = [...pkgs.values()].filter((p) => !fs.existsSync(debPath(p)));
  if (!missing.length) return true;
  const tmp = fs.mkdtempSync(path.join(DEB_DIR, '.partial-'));
  try {
    const mb = missing.reduce((s, p) => s + (p.size || 0), 0) / 1e6;
    log(`downloading ${missing.length} packages (${mb.toFixed(1)} MB)`);
    const r = run('apt-get', [...aptOpts(), 'download', ...missing.map((p) => `${p.name}=${p.version}`)], { cwd: tmp });
    if (r.status !== 0) {
      log(`apt-get download failed: ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`);
      return false;
    }
    const files = fs.readdirSync(tmp);
    for (const p of missing) {
      const f = files.find((x) => x.startsWith(`${p.name}_`) && x.endsWith('.deb'));
      if (!f) fail(`apt-get download did not produce ${p.name}`);
      const data = fs.readFileSync(path.join(tmp, f));
      if (p.sha256 && sha256(data) !== p.sha256) fail(`checksum mismatch for ${f}`);
      fs.renameSync(path.join(tmp, f), debPath(p)); // atomic: the cache never holds partial files
    }
    return true;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// Build key: package versions + our own sources

function listFiles(dir, base = dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...listFiles(p, base));
    else if (e.isFile()) out.push(path.relative(base, p));
  }
  return out.sort();
}

function sourceHash() {
  const h = createHash('sha256');
  for (const f of listFiles(HERE)) {
    if (f.endsWith('.md')) continue; // docs don't change the image
    h.update(f + '\0').update(fs.readFileSync(path.join(HERE, f))).update('\0');
  }
  return h.digest('hex');
}

function buildKey(pkgs) {
  const versions = [...pkgs.values()].map((p) => `${p.name}=${p.version}:${p.arch}`).sort();
  return sha256(JSON.stringify({ FORMAT, versions, src: sourceHash() })).slice(0, 32);
}

const OUTPUT_FILES = ['vmlinuz', 'initrd.img', 'bios.bin', 'manifest.json'];

function upToDate(key) {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(OUT, 'manifest.json'), 'utf8'));
    return m.buildKey === key && OUTPUT_FILES.every((f) => fs.existsSync(path.join(OUT, f)));
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// Package contents

// Resolve symlinks of rel (relative to a package root) inside that root.
function resolveIn(root, rel) {
  for (let i = 0; i < 40; i++) {
    let st;
    try {
      st = fs.lstatSync(path.join(root, rel));
    } catch {
      return null;
    }
    if (!st.isSymbolicLink()) return rel;
    const target = fs.readlinkSync(path.join(root, rel));
    rel = target.startsWith('/') ? target.slice(1) : path.posix.join(path.posix.dirname(rel), target);
    rel = path.posix.normalize(rel);
  }
  return null;
}

function globToRegExp(glob) {
  return new RegExp('^' + glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*') + '$');
}

function extract(deb, dir) {
  fs.mkdirSync(dir, { recursive: true });
  runOrFail('dpkg-deb', ['-x', deb, dir]);
  return dir;
}

// The kernel banner from the bzImage header ("6.1.0-50-686 (debian-kernel@...) #1 SMP ...").
function kernelBanner(vmlinuz) {
  const off = vmlinuz.readUInt16LE(0x20e) + 0x200;
  const end = vmlinuz.indexOf(0, off);
  return vmlinuz.toString('latin1', off, end);
}

// Busybox keeps its applet names as one NUL-separated sorted list starting "[\0[[\0".
function busyboxApplets(bin) {
  const start = bin.indexOf(Buffer.from('[\0[[\0', 'latin1'));
  if (start < 0) fail('cannot find the applet list in busybox');
  const names = [];
  let off = start;
  for (;;) {
    const end = bin.indexOf(0, off);
    const s = bin.toString('latin1', off, end);
    if (!s || !/^[\x21-\x7e]+$/.test(s)) break;
    names.push(s);
    off = end + 1;
  }
  for (const must of ['sh', 'insmod', 'timeout', 'base64', 'setsid', 'cttyhack', 'stty', 'mount', 'usleep']) {
    if (!names.includes(must)) fail(`busybox applet list looks wrong: no ${must}`);
  }
  return names;
}

// Debian's static busybox is built with FEATURE_SH_STANDALONE/PREFER_APPLETS:
// its shell runs an applet of that name even when PATH has a real program
// (mke2fs, fdisk, blkdiscard, ...). Rename those applets in the binary's
// sorted name table (last letter -> '~', same length, order kept) so the
// real tools are found through PATH.
function hideApplets(bin, hide) {
  const out = Buffer.from(bin);
  const start = out.indexOf(Buffer.from('[\0[[\0', 'latin1'));
  const names = [];
  let off = start;
  for (;;) {
    const end = out.indexOf(0, off);
    const s = out.toString('latin1', off, end);
    if (!s || !/^[\x21-\x7e]+$/.test(s)) break;
    if (hide.has(s)) out[end - 1] = 0x7e;
    names.push(out.toString('latin1', off, end));
    off = end + 1;
  }
  for (let i = 1; i < names.length; i++) {
    if (Buffer.compare(Buffer.from(names[i - 1], 'latin1'), Buffer.from(names[i], 'latin1')) >= 0) {
      fail(`hiding busybox applets would break its sorted name table at ${names[i - 1]} / ${names[i]}`);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Kernel modules: dependency closure from .modinfo, in load order

function moduleClosure(kroot, kver) {
  const base = `lib/modules/${kver}`;
  const norm = (n) => n.replace(/-/g, '_');
  const files = new Map(); // normalized name -> path relative to kroot
  for (const f of listFiles(path.join(kroot, base, 'kernel'))) {
    if (f.endsWith('.ko')) files.set(norm(path.basename(f, '.ko')), `${base}/kernel/${f}`);
  }
  const builtin = new Set(
    fs.readFileSync(path.join(kroot, base, 'modules.builtin'), 'utf8').split('\n').filter(Boolean)
      .map((l) => norm(path.basename(l, '.ko'))),
  );
  const infoCache = new Map();
  const info = (name) => {
    if (!infoCache.has(name)) infoCache.set(name, readModinfo(fs.readFileSync(path.join(kroot, files.get(name)))));
    return infoCache.get(name);
  };
  // Softdeps name aliases such as "crypto-crc32c"; look them up among the
  // generic crypto/lib modules (the arch-optimized ones may not load in v86).
  let aliasIndex = null;
  const byAlias = (alias) => {
    if (!aliasIndex) {
      aliasIndex = new Map();
      for (const [name, rel] of files) {
        if (!/\/kernel\/(crypto|lib)\//.test(rel)) continue;
        for (const a of [].concat(info(name).alias || [])) {
          if (!aliasIndex.has(a)) aliasIndex.set(a, []);
          aliasIndex.get(a).push(name);
        }
      }
    }
    const c = aliasIndex.get(alias) || [];
    return c.find((n) => n.endsWith('_generic')) || c.sort()[0] || null;
  };

  const order = [];
  const deps = new Map();
  const state = new Map(); // name -> 'visiting' | 'done'
  const visit = (name, from) => {
    name = norm(name);
    if (state.get(name) === 'done') return;
    if (state.get(name) === 'visiting') fail(`module dependency cycle at ${name}`);
    if (!files.has(name)) fail(`module ${name}${from ? ` (needed by ${from})` : ''} not found in the kernel package`);
    state.set(name, 'visiting');
    const mi = info(name);
    const direct = String(mi.depends || '').split(',').filter(Boolean).map(norm);
    // "softdep=pre: a b post: c": the pre: ones must be loaded first.
    let mode = null;
    for (const tok of String(mi.softdep || '').split(/\s+/).filter(Boolean)) {
      if (tok === 'pre:' || tok === 'post:') mode = tok;
      else if (mode === 'pre:') {
        const n = files.has(norm(tok)) ? norm(tok) : byAlias(tok);
        if (n) direct.push(n);
        else if (!builtin.has(norm(tok))) log(`note: softdep ${tok} of ${name} not available, skipped`);
      }
    }
    const uniq = [...new Set(direct)].filter((d) => !builtin.has(d) || files.has(d));
    for (const d of uniq) visit(d, name);
    deps.set(name, uniq);
    state.set(name, 'done');
    order.push(name);
  };
  for (const m of MODULES) visit(m, null);
  return { order, deps, path: (n) => files.get(n) };
}

// ---------------------------------------------------------------------------
// The initramfs

function buildInitramfs({ roots, kroot, kver, mods, pkgs, key }) {
  const entries = new Map(); // path -> entry
  const add = (e) => entries.set(e.path, e);
  const dir = (p, mode = 0o755) => add({ path: p, type: 'dir', mode });
  const file = (p, data, mode = 0o644) => add({ path: p, type: 'file', mode, data });
  const link = (p, target) => add({ path: p, type: 'symlink', symlink: target });

  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'lib', 'etc', 'etc/vstor', 'dev', 'proc', 'sys', 'run',
    'mnt', 'vstor']) dir(d);
  dir('tmp', 0o1777);
  dir('root', 0o700);

  const usedPkgs = new Set();
  const elfs = []; // [path in image, data] to scan for libraries

  const bbRoot = roots.get(BUSYBOX_PKG);
  const bb = fs.readFileSync(path.join(bbRoot, 'bin/busybox'));
  usedPkgs.add(BUSYBOX_PKG);

  // Tools from packages.
  const toolNames = new Set();
  for (const t of TOOLS) {
    const root = roots.get(t.pkg);
    const all = listFiles(root).concat(listSymlinks(root));
    for (const pattern of t.files) {
      const re = globToRegExp(pattern);
      const matches = [...new Set(all.filter((f) => re.test(f)))];
      if (!matches.length) fail(`${t.pkg}: no file matches ${pattern}`);
      for (const rel of matches) {
        const real = resolveIn(root, rel);
        if (!real) fail(`${t.pkg}: dangling symlink ${rel}`);
        const lst = fs.lstatSync(path.join(root, rel));
        if (lst.isSymbolicLink() && path.posix.dirname(real) === path.posix.dirname(rel) && all.includes(real) &&
          t.files.some((p) => globToRegExp(p).test(real))) {
          link(rel, path.posix.basename(real));
        } else {
          const data = fs.readFileSync(path.join(root, real));
          const mode = fs.statSync(path.join(root, real)).mode & 0o777;
          file(rel, data, mode);
          if (isElf(data)) elfs.push([rel, data]);
        }
        toolNames.add(path.posix.basename(rel));
      }
    }
    usedPkgs.add(t.pkg);
  }

  // Our own programs.
  file('init', fs.readFileSync(path.join(HERE, 'init')), 0o755);
  file('bin/vstor-put', fs.readFileSync(path.join(HERE, 'vstor-put')), 0o755);
  file('bin/vstor-io', compileVstorIo('vstor-io'), 0o755);
  file('bin/vstor-dmajit', compileVstorIo('vstor-dmajit'), 0o755);
  toolNames.add('vstor-put').add('vstor-io').add('vstor-dmajit');

  // Busybox and its applets; real tools win over same-named applets.
  const allApplets = busyboxApplets(bb);
  const hidden = allApplets.filter((a) => toolNames.has(a));
  file('bin/busybox', hideApplets(bb, new Set(hidden)), 0o755);
  const applets = allApplets.filter((a) => a !== 'busybox' && a !== 'init' && a !== 'linuxrc' && !toolNames.has(a));
  for (const a of applets) link(`bin/${a}`, 'busybox');

  // Shared libraries by DT_NEEDED, found in the extracted library packages.
  const libIndex = new Map(); // soname/file name -> {pkg, rel}
  for (const [name, root] of roots) {
    if (!isLibName(name) && !TOOLS.some((t) => t.pkg === name)) continue;
    for (const d of ['lib/i386-linux-gnu', 'usr/lib/i386-linux-gnu', 'lib', 'usr/lib']) {
      if (!fs.existsSync(path.join(root, d))) continue;
      for (const f of fs.readdirSync(path.join(root, d))) {
        if (/\.so(\.|$)/.test(f) && !libIndex.has(f)) libIndex.set(f, { pkg: name, rel: `${d}/${f}` });
      }
    }
  }
  const libsAdded = new Map(); // soname -> path in image
  const queue = [...elfs];
  let interp = null;
  while (queue.length) {
    const [who, data] = queue.shift();
    const dyn = readDynamicInfo(data);
    if (dyn.interp) interp = dyn.interp;
    for (const so of dyn.needed) {
      if (libsAdded.has(so)) continue;
      const hit = libIndex.get(so);
      if (!hit) fail(`library ${so} needed by ${who} not found in the downloaded packages`);
      const root = roots.get(hit.pkg);
      const real = resolveIn(root, hit.rel);
      if (!real) fail(`dangling library symlink ${hit.pkg}:${hit.rel}`);
      const libData = fs.readFileSync(path.join(root, real));
      // Store the library under its soname: the loader looks for exactly that name.
      const dest = `${path.posix.dirname(hit.rel)}/${so}`;
      file(dest, libData, 0o755);
      libsAdded.set(so, dest);
      usedPkgs.add(hit.pkg);
      queue.push([dest, libData]);
    }
  }
  if (interp) {
    // The ELF interpreter (/lib/ld-linux.so.2) is a symlink in libc6: keep it that way.
    const libc = roots.get('libc6');
    const rel = interp.replace(/^\//, '');
    const real = libc && resolveIn(libc, rel);
    if (!real) fail(`ELF interpreter ${interp} not found in libc6`);
    if (!entries.has(real)) file(real, fs.readFileSync(path.join(libc, real)), 0o755);
    if (real !== rel) link(rel, path.posix.relative(path.posix.dirname(rel), real));
  }

  // Kernel modules, flat in /lib/modules/<kver>/, without signatures.
  let modBytes = 0;
  for (const m of mods.order) {
    const data = stripModuleSignature(fs.readFileSync(path.join(kroot, mods.path(m))));
    modBytes += data.length;
    file(`lib/modules/${kver}/${m}.ko`, data);
  }
  file('etc/vstor/modules.order', mods.order.join('\n') + '\n');
  file('etc/vstor/modules.deps', mods.order.map((m) => `${m}: ${mods.deps.get(m).join(' ')}`.trimEnd()).join('\n') + '\n');
  file('etc/vstor/build', `kernel=${kver}\nbuild=${key}\n`);

  // Minimal /etc.
  file('etc/passwd', 'root::0:0:root:/root:/bin/sh\n');
  file('etc/group', 'root:x:0:\n');
  file('etc/hostname', 'vstor-guest\n');
  file('etc/profile', 'export PS1="vstor# "\nexport PATH=/sbin:/usr/sbin:/bin:/usr/bin\ncd /tmp 2>/dev/null\n');
  link('etc/mtab', '/proc/self/mounts'); // e2fsprogs checks whether a device is mounted

  const list = [...entries.values()];
  const cpio = buildCpio(list);
  const pkgVersions = (names) => Object.fromEntries([...names].sort().map((n) => [n, pkgs.get(n).version]));
  return {
    cpio,
    entryCount: list.length,
    moduleBytes: modBytes,
    libs: [...libsAdded.values()].sort(),
    tools: [...entries.values()].filter((e) => e.type === 'file' && /^(s?bin|usr\/s?bin)\//.test(e.path))
      .map((e) => '/' + e.path).sort(),
    applets,
    hiddenApplets: hidden,
    usedPackages: pkgVersions(usedPkgs),
  };
}

function listSymlinks(dir, base = dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...listSymlinks(p, base));
    else if (e.isSymbolicLink()) out.push(path.relative(base, p));
  }
  return out;
}

// ---------------------------------------------------------------------------
// Our static i386 C programs: vstor-io (I/O at a queue depth) and vstor-dmajit (adapter check)

function compileVstorIo(name = 'vstor-io') {
  const src = path.join(HERE, `${name}.c`);
  const out = path.join(WORK, name);
  const args = ['-m32', '-static', '-O2', '-Wall', '-Wextra', '-s', '-o', out, src];
  let r = run('gcc', args);
  if (r.status !== 0) {
    // Usually gcc-multilib (32-bit libc) is missing; install it and retry once.
    log('gcc -m32 -static failed; installing gcc-multilib');
    aptInstallHost(['gcc', 'gcc-multilib']);
    r = run('gcc', args);
    if (r.status !== 0) fail(`compiling ${name} failed:\n${r.stderr}`);
  }
  if (r.stderr.trim()) process.stderr.write(r.stderr);
  return fs.readFileSync(out);
}

// ---------------------------------------------------------------------------

function writeAtomic(name, data) {
  const tmp = path.join(OUT, `.${name}.tmp`);
  fs.writeFileSync(tmp, data);
  fs.renameSync(tmp, path.join(OUT, name));
}

let WORK = null;

// The guest files are current but the boot media are missing or stale (new tools, new config):
// rebuild only them from the vmlinuz and initrd.img in build/guest and update the manifest.
function updateBootMedia(manifest, bootTools) {
  const vmlinuz = fs.readFileSync(path.join(OUT, 'vmlinuz'));
  const initrd = fs.readFileSync(path.join(OUT, 'initrd.img'));
  if (sha256(vmlinuz) !== manifest.files.vmlinuz.sha256 || sha256(initrd) !== manifest.files['initrd.img'].sha256) {
    fail('build/guest/vmlinuz or initrd.img does not match manifest.json; rebuild with --force');
  }
  WORK = fs.mkdtempSync(path.join(os.tmpdir(), 'vstor-guest-'));
  try {
    Object.assign(manifest.files, writeBootMedia(vmlinuz, initrd, WORK, bootTools, writeAtomic));
    writeAtomic('manifest.json', JSON.stringify(manifest, null, 2) + '\n');
  } finally {
    fs.rmSync(WORK, { recursive: true, force: true });
  }
}

function main() {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log('usage: node images/build.mjs [--force] [--refresh]');
    return;
  }
  for (const a of argv) if (!['--force', '--refresh'].includes(a)) fail(`unknown argument ${a}`);
  const force = argv.includes('--force') || process.env.VSTOR_FORCE === '1';
  let updated = false;

  ensureAptTools();
  fs.mkdirSync(DEB_DIR, { recursive: true });
  if (argv.includes('--refresh') || !listsPresent()) {
    aptUpdate();
    updated = true;
  }

  // Resolve versions from the local lists; only touch the network when a
  // needed .deb is not cached yet (or apt-get download fails on stale lists).
  let { pkgs, kernelPkg } = resolveCached();
  let key = buildKey(pkgs);
  const bootTools = ensureBootTools();
  if (!force && upToDate(key)) {
    const manifest = JSON.parse(fs.readFileSync(path.join(OUT, 'manifest.json'), 'utf8'));
    if (!bootMediaUpToDate(manifest, OUT, bootTools)) {
      updateBootMedia(manifest, bootTools);
      return;
    }
    console.log(`images: build/guest is up to date (${pkgs.get(kernelPkg).name} ${pkgs.get(kernelPkg).version}, key ${key})`);
    return;
  }
  if (!downloadDebs(pkgs)) {
    if (updated) fail('downloading packages failed');
    aptUpdate();
    ({ pkgs, kernelPkg } = resolveCached());
    key = buildKey(pkgs);
    if (!downloadDebs(pkgs)) fail('downloading packages failed after apt-get update');
  }

  WORK = fs.mkdtempSync(path.join(os.tmpdir(), 'vstor-guest-'));
  try {
    log(`extracting ${pkgs.size} packages`);
    const roots = new Map();
    for (const p of pkgs.values()) roots.set(p.name, extract(debPath(p), path.join(WORK, 'pkg', p.name)));

    const kroot = roots.get(kernelPkg);
    const vmlinuzName = fs.readdirSync(path.join(kroot, 'boot')).find((f) => f.startsWith('vmlinuz-'));
    if (!vmlinuzName) fail(`no /boot/vmlinuz-* in ${kernelPkg}`);
    const kver = vmlinuzName.slice('vmlinuz-'.length);
    const vmlinuz = fs.readFileSync(path.join(kroot, 'boot', vmlinuzName));

    const mods = moduleClosure(kroot, kver);
    log(`kernel ${kver}; ${mods.order.length} modules: ${mods.order.join(' ')}`);

    const img = buildInitramfs({ roots, kroot, kver, mods, pkgs, key });
    log(`initramfs: ${img.entryCount} entries, ${(img.cpio.length / 1e6).toFixed(2)} MB`);

    const biosRoot = roots.get(BIOS_PKG);
    const bios = fs.readFileSync(path.join(biosRoot, 'usr/share/seabios/bios-256k.bin'));
    const vgaPath = path.join(biosRoot, 'usr/share/seabios/vgabios-stdvga.bin');
    const vga = fs.existsSync(vgaPath) ? fs.readFileSync(vgaPath) : null;

    fs.mkdirSync(OUT, { recursive: true });
    fs.rmSync(path.join(OUT, 'manifest.json'), { force: true }); // incomplete until rewritten
    const describe = (data) => ({ size: data.length, sha256: sha256(data) });
    writeAtomic('vmlinuz', vmlinuz);
    writeAtomic('initrd.img', img.cpio);
    writeAtomic('bios.bin', bios);
    if (vga) writeAtomic('vgabios.bin', vga);
    else fs.rmSync(path.join(OUT, 'vgabios.bin'), { force: true });

    const manifest = {
      format: FORMAT,
      buildKey: key,
      builtAt: new Date().toISOString(),
      kernel: {
        package: kernelPkg,
        version: pkgs.get(kernelPkg).version,
        release: kver,
        banner: kernelBanner(vmlinuz),
      },
      recommendedCmdline: RECOMMENDED_CMDLINE,
      files: {
        'vmlinuz': describe(vmlinuz),
        'initrd.img': { ...describe(img.cpio), entries: img.entryCount, moduleBytes: img.moduleBytes },
        'bios.bin': { ...describe(bios), from: `${BIOS_PKG} bios-256k.bin` },
        ...(vga ? { 'vgabios.bin': { ...describe(vga), from: `${BIOS_PKG} vgabios-stdvga.bin` } } : {}),
        ...writeBootMedia(vmlinuz, img.cpio, WORK, bootTools, writeAtomic),
      },
      modules: mods.order,
      moduleDeps: Object.fromEntries(mods.order.map((m) => [m, mods.deps.get(m)])),
      tools: img.tools,
      libraries: img.libs,
      busyboxApplets: img.applets.length,
      busyboxAppletsHidden: img.hiddenApplets,
      packages: Object.fromEntries([...pkgs.values()].map((p) => [p.name, p.version]).sort()),
      usedPackages: img.usedPackages,
    };
    writeAtomic('manifest.json', JSON.stringify(manifest, null, 2) + '\n');
    log(`wrote ${path.relative(REPO, OUT)}/: vmlinuz ${vmlinuz.length}, initrd.img ${img.cpio.length}, ` +
      `bios.bin ${bios.length}${vga ? `, vgabios.bin ${vga.length}` : ''}, boot.img ${manifest.files['boot.img'].size}, boot.iso ${manifest.files['boot.iso'].size} bytes`);
  } finally {
    fs.rmSync(WORK, { recursive: true, force: true });
  }
}

main();
