// The guest's boot media, booted by SeaBIOS through a real bootloader (no bzImage shortcut):
//
// boot.img: a bootable raw disk, built without loop mounts
//   sector 0           syslinux mbr.bin (440 bytes), disk ID, one active partition entry
//   sector 2048..end   FAT16 (mkfs.vfat --offset), syslinux installed with --offset (through
//                      mtools), /vmlinuz, /initrd.img and /syslinux.cfg copied in with mcopy
//   SeaBIOS loads the MBR from the first hard disk, mbr.bin chains to the partition's boot
//   sector, syslinux loads the kernel and the initramfs through INT 13h.
//
// boot.iso: an El Torito CD (genisoimage, no emulation, 2048-byte sectors) with isolinux
//   SeaBIOS reads the boot catalog from the CD's ATAPI drive and runs isolinux.bin, which loads
//   /vmlinuz and /initrd.img through INT 13h on the CD. Volume ID VSTOR_BOOT.
//
// Both pass `vstor.boot=disk|iso` on the kernel command line, so a guest can tell which it was.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { aptInstallHost, fail, have, hostPackageVersions, log, runOrFail, sha256, ENV } from './build-util.mjs';

// Host packages (Debian's own architecture is fine: only the installers run on the host;
// mbr.bin, isolinux.bin and ldlinux.sys/.c32 are the arch-independent BIOS binaries).
const BOOT_HOST_PACKAGES = ['syslinux', 'syslinux-common', 'isolinux', 'mtools', 'dosfstools', 'genisoimage'];
const SYSLINUX_MBR = '/usr/lib/syslinux/mbr/mbr.bin';
const ISOLINUX_BIN = '/usr/lib/ISOLINUX/isolinux.bin';
const LDLINUX_C32 = '/usr/lib/syslinux/modules/bios/ldlinux.c32';
// Bump when the media change in a way their inputs (kernel, initramfs, config, tools) would not show.
const BOOT_FORMAT = 2;
// The FAT partition starts at 1 MiB (sector 2048), like fdisk's default.
const BOOT_PART_START = 2048;
export const BOOT_ISO_VOLUME_ID = 'VSTOR_BOOT';

let baseCmdline = '';
/** What the bootloaders pass to the kernel: the recommended line plus the agent mode. */
export function setBootCmdline(recommended) {
  // A bootloader boot carries no appended initramfs, so the guest always runs its agent.
  baseCmdline = `${recommended} VSTOR_MODE=agent`;
}
const bootCmdline = (how) => `${baseCmdline} vstor.boot=${how}`;

function syslinuxCfg(how) {
  return [
    `# vstor boot ${how} (images/boot-media.mjs)`,
    'SERIAL 0 115200',
    'DEFAULT vstor',
    'PROMPT 0',
    'TIMEOUT 0',
    'LABEL vstor',
    '  KERNEL /vmlinuz',
    '  INITRD /initrd.img',
    `  APPEND ${bootCmdline(how)}`,
    '',
  ].join('\n');
}

export function ensureBootTools() {
  let versions = hostPackageVersions(BOOT_HOST_PACKAGES);
  const files = [SYSLINUX_MBR, ISOLINUX_BIN, LDLINUX_C32];
  const ok = () => Object.values(versions).every(Boolean) &&
    ['syslinux', 'mkfs.vfat', 'mcopy', 'mdir', 'genisoimage', 'isoinfo'].every(have) && files.every((f) => fs.existsSync(f));
  if (!ok()) {
    aptInstallHost(BOOT_HOST_PACKAGES);
    versions = hostPackageVersions(BOOT_HOST_PACKAGES);
    if (!ok()) fail(`the boot media need ${BOOT_HOST_PACKAGES.join(' ')} (${files.join(', ')})`);
  }
  return versions;
}

// Everything the boot media are made from; they are rebuilt when this changes.
function bootMediaKey(vmlinuzSha, initrdSha, toolVersions) {
  return sha256(JSON.stringify({
    BOOT_FORMAT, BOOT_PART_START, vmlinuzSha, initrdSha, cfg: [syslinuxCfg('disk'), syslinuxCfg('iso')], toolVersions,
  })).slice(0, 32);
}

// Room for the kernel, the initramfs, syslinux (~200 KB) and FAT overhead, with a margin for a
// growing initramfs; at least 32 MiB, in steps of 8 MiB.
function bootDiskBytes(payload) {
  const MiB = 1 << 20;
  const need = BOOT_PART_START * 512 + payload * 1.1 + 4 * MiB;
  return Math.max(32 * MiB, Math.ceil(need / (8 * MiB)) * 8 * MiB);
}

// CHS address of an LBA for the partition table (255 heads, 63 sectors; beyond 1023 cylinders
// the conventional 1023/254/63). Only CHS-era software reads it; mbr.bin and Linux use the LBA.
function chs(lba) {
  const S = 63, H = 255;
  let c = Math.floor(lba / (S * H)), h = Math.floor(lba / S) % H, s = (lba % S) + 1;
  if (c > 1023) [c, h, s] = [1023, 254, 63];
  return [h, ((c >> 2) & 0xc0) | s, c & 0xff];
}

function buildBootDisk(vmlinuz, initrd, work) {
  const dir = path.join(work, 'bootdisk');
  fs.mkdirSync(dir, { recursive: true });
  const img = path.join(dir, 'boot.img');
  const size = bootDiskBytes(vmlinuz.length + initrd.length);
  const sectors = size / 512;
  const partSectors = sectors - BOOT_PART_START;
  const offsetBytes = BOOT_PART_START * 512;

  // Sector 0: disk ID and one active partition, type 0Eh (FAT16, LBA); boot code comes later.
  const mbr = Buffer.alloc(512);
  mbr.writeUInt32LE(0x5653544f, 440); // "OTSV": a fixed disk ID keeps the image reproducible
  const e = 446;
  mbr[e] = 0x80;
  Buffer.from(chs(BOOT_PART_START)).copy(mbr, e + 1);
  mbr[e + 4] = 0x0e;
  Buffer.from(chs(sectors - 1)).copy(mbr, e + 5);
  mbr.writeUInt32LE(BOOT_PART_START, e + 8);
  mbr.writeUInt32LE(partSectors, e + 12);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  const fd = fs.openSync(img, 'w');
  try {
    fs.writeSync(fd, mbr, 0, 512, 0);
    fs.ftruncateSync(fd, size);
  } finally {
    fs.closeSync(fd);
  }

  // mtools (used by mcopy and by syslinux itself) would otherwise complain that the FAT's
  // geometry does not match the "drive"; the config file is not consulted.
  const toolEnv = { ...ENV, MTOOLS_SKIP_CHECK: '1', MTOOLSRC: '/dev/null' };
  runOrFail('mkfs.vfat', ['-F', '16', '--offset', String(BOOT_PART_START), '-h', String(BOOT_PART_START),
    '-n', 'VSTORBOOT', '-i', '5653544f', img, String(partSectors / 2)], { env: toolEnv });
  runOrFail('syslinux', ['--install', '--offset', String(offsetBytes), img], { env: toolEnv });

  const cfg = syslinuxCfg('disk');
  fs.writeFileSync(path.join(dir, 'vmlinuz'), vmlinuz);
  fs.writeFileSync(path.join(dir, 'initrd.img'), initrd);
  fs.writeFileSync(path.join(dir, 'syslinux.cfg'), cfg);
  const fat = `${img}@@${offsetBytes}`;
  runOrFail('mcopy', ['-i', fat, ...['vmlinuz', 'initrd.img', 'syslinux.cfg'].map((f) => path.join(dir, f)), '::/'],
    { env: toolEnv });

  // The boot code: the first 440 bytes of sector 0, keeping the disk ID and partition table.
  const mbrCode = fs.readFileSync(SYSLINUX_MBR);
  if (mbrCode.length > 440) fail(`${SYSLINUX_MBR} is ${mbrCode.length} bytes, more than the 440 of MBR boot code`);
  const data = fs.readFileSync(img);
  mbrCode.copy(data, 0);

  // Check what went in: every file on the FAT with its size, and syslinux's boot sector.
  const listing = runOrFail('mdir', ['-a', '-b', '-i', fat, '::/'], { env: toolEnv });
  const files = listing.split('\n').map((l) => l.trim().replace(/^::\//, '')).filter(Boolean).sort();
  for (const f of ['vmlinuz', 'initrd.img', 'syslinux.cfg', 'ldlinux.sys', 'ldlinux.c32']) {
    if (!files.includes(f)) fail(`boot.img: ${f} missing on the FAT (found: ${files.join(' ')})`);
  }
  const vbr = data.subarray(offsetBytes, offsetBytes + 512);
  if (vbr.readUInt16LE(510) !== 0xaa55 || vbr.toString('latin1', 3, 11) !== 'SYSLINUX') {
    fail('boot.img: the partition has no SYSLINUX boot sector');
  }
  return {
    data,
    info: {
      partition: { startSector: BOOT_PART_START, sectors: partSectors, type: '0x0e', filesystem: 'FAT16', label: 'VSTORBOOT' },
      filesOnPartition: files,
      cmdline: bootCmdline('disk'),
    },
  };
}

function buildBootIso(vmlinuz, initrd, work) {
  const root = path.join(work, 'bootiso');
  fs.mkdirSync(path.join(root, 'isolinux'), { recursive: true });
  fs.copyFileSync(ISOLINUX_BIN, path.join(root, 'isolinux', 'isolinux.bin'));
  fs.copyFileSync(LDLINUX_C32, path.join(root, 'isolinux', 'ldlinux.c32'));
  fs.writeFileSync(path.join(root, 'isolinux', 'isolinux.cfg'), syslinuxCfg('iso'));
  fs.writeFileSync(path.join(root, 'vmlinuz'), vmlinuz);
  fs.writeFileSync(path.join(root, 'initrd.img'), initrd);
  const iso = path.join(work, 'boot.iso');
  // -boot-info-table patches isolinux.bin's copy in the image with its own location (isolinux
  // needs it); -boot-load-size 4 is the 2 KiB the BIOS loads first.
  runOrFail('genisoimage', ['-quiet', '-o', iso, '-V', BOOT_ISO_VOLUME_ID, '-J', '-R',
    '-b', 'isolinux/isolinux.bin', '-c', 'isolinux/boot.cat', '-no-emul-boot', '-boot-load-size', '4',
    '-boot-info-table', root]);
  const data = fs.readFileSync(iso);
  // Check what went in: the El Torito boot record and the files.
  const brvd = data.subarray(17 * 2048, 17 * 2048 + 64);
  if (brvd[0] !== 0 || brvd.toString('latin1', 1, 6) !== 'CD001' || !brvd.toString('latin1', 7, 30).startsWith('EL TORITO')) {
    fail('boot.iso: no El Torito boot record volume descriptor at sector 17');
  }
  const listing = runOrFail('isoinfo', ['-R', '-f', '-i', iso]);
  const files = listing.split('\n').map((l) => l.trim()).filter(Boolean).sort();
  for (const f of ['/vmlinuz', '/initrd.img', '/isolinux/isolinux.bin', '/isolinux/ldlinux.c32', '/isolinux/isolinux.cfg']) {
    if (!files.includes(f)) fail(`boot.iso: ${f} missing (found: ${files.join(' ')})`);
  }
  return { data, info: { volumeId: BOOT_ISO_VOLUME_ID, files, cmdline: bootCmdline('iso'), elTorito: 'no emulation, isolinux' } };
}

/**
 * Build boot.img and boot.iso from the kernel and initramfs, write them with `write(name, data)`
 * and return their manifest entries.
 */
export function writeBootMedia(vmlinuz, initrd, work, toolVersions, write) {
  const key = bootMediaKey(sha256(vmlinuz), sha256(initrd), toolVersions);
  const disk = buildBootDisk(vmlinuz, initrd, work);
  write('boot.img', disk.data);
  log(`boot.img: ${disk.data.length >> 20} MiB, FAT16 at sector ${BOOT_PART_START}: ${disk.info.filesOnPartition.join(' ')}`);
  const iso = buildBootIso(vmlinuz, initrd, work);
  write('boot.iso', iso.data);
  log(`boot.iso: ${(iso.data.length / 1048576).toFixed(1)} MiB, El Torito with isolinux, volume ${BOOT_ISO_VOLUME_ID}`);
  const entry = (data, info) => ({ size: data.length, sha256: sha256(data), key, ...info, hostPackages: toolVersions });
  return { 'boot.img': entry(disk.data, disk.info), 'boot.iso': entry(iso.data, iso.info) };
}

/** Whether the manifest's boot media entries are current for its kernel, initramfs and these tools. */
export function bootMediaUpToDate(manifest, outDir, toolVersions) {
  const k = manifest.files?.vmlinuz?.sha256;
  const i = manifest.files?.['initrd.img']?.sha256;
  if (!k || !i) return false;
  const key = bootMediaKey(k, i, toolVersions);
  return ['boot.img', 'boot.iso'].every((name) => {
    const b = manifest.files?.[name];
    const file = path.join(outDir, name);
    return b && b.key === key && fs.existsSync(file) && fs.statSync(file).size === b.size;
  });
}
