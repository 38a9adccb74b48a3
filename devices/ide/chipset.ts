/**
 * The three Intel IDE functions vstor emulates and their device-specific PCI configuration
 * registers, as Linux ata_piix and SeaBIOS program them (Intel 82371SB/AB and 82801FB datasheets;
 * VirtualBox DevATA.cpp's defaults):
 *
 *   40h-41h IDETIM primary   bit 15 IDE decode enable, 14 SITRE, 13:12 ISP, 9:8 RTC, 7:0 drive bits
 *   42h-43h IDETIM secondary
 *   44h     SIDETIM          slave drive timings (both channels)
 *   48h     UDMACTL          PIIX4/ICH: Ultra DMA enable per drive (bits 3:0)
 *   4Ah-4Bh UDMATIM          PIIX4/ICH: Ultra DMA cycle time per drive (2 bits each, nibble-spaced)
 *   54h-55h IDE_CONFIG       ICH: 66/100 MHz clocks, 80-conductor cable report (bits 7:4), ping-pong
 *
 * The IDE decode enable bits start set (VirtualBox does the same): SeaBIOS sets them only for the
 * PIIX3/PIIX4 IDs, and ata_piix ignores a channel whose bit is clear. The guest may clear them; the
 * channel's legacy ports then stop decoding, as on the real part.
 */

export type IdeChipset = "piix3" | "piix4" | "ich6";

export interface ChipsetInfo {
  /** For the PCI function's name and traces. */
  name: string;
  deviceId: number;
  revision: number;
  /** UDMACTL/UDMATIM exist (PIIX4, ICH). */
  udma: boolean;
  /** IDE_CONFIG (54h) exists (ICH). */
  ideConfig: boolean;
}

export const INTEL_VENDOR_ID = 0x8086;

export const CHIPSETS: Readonly<Record<IdeChipset, ChipsetInfo>> = {
  piix3: { name: "PIIX3 IDE", deviceId: 0x7010, revision: 0x00, udma: false, ideConfig: false },
  piix4: { name: "PIIX4 IDE", deviceId: 0x7111, revision: 0x01, udma: true, ideConfig: false },
  ich6: { name: "ICH6 IDE", deviceId: 0x269e, revision: 0x00, udma: true, ideConfig: true },
};

/** Mass storage / IDE, programming interface 80h: both channels in compatibility mode, bus master. */
export const IDE_CLASS_CODE = 0x010180;

/** Device-specific configuration registers (offsets in config space). */
export const CFG = {
  IDETIM_PRIMARY: 0x40,
  IDETIM_SECONDARY: 0x42,
  SIDETIM: 0x44,
  UDMACTL: 0x48,
  UDMATIM: 0x4a,
  IDE_CONFIG: 0x54,
} as const;

/** IDETIM bit 15: the channel's legacy ports are decoded. */
export const IDETIM_DECODE_ENABLE = 0x8000;
/** IDETIM bits the guest can write: all but the reserved bits 11:10. */
const IDETIM_MASK = 0xf3ff;
const UDMACTL_MASK = 0x0f;
const UDMATIM_MASK = 0x3333;
/** IDE_CONFIG: clock bits 3:0, cable report 7:4, WR_PingPong_EN (10), fast clocks 15:12. */
const IDE_CONFIG_MASK = 0xf4ff;
const IDE_CONFIG_PING_PONG = 1 << 10;
/** PCR0/PCR1 (primary) and SCR0/SCR1 (secondary): 80-conductor cables, as ata_piix reads them. */
const IDE_CONFIG_CABLE80 = 0xf0;

/** Where the extra registers start and how many bytes they span (40h..55h). */
const EXTRA_BASE = 0x40;
const EXTRA_LENGTH = 0x16;

export interface ExtraConfig {
  offset: number;
  initial: Uint8Array;
  writeMask: Uint8Array;
}

/** Reset values and write masks of 40h..55h for a chipset. */
export function extraConfig(chipset: IdeChipset, cable80: boolean): ExtraConfig {
  const info = CHIPSETS[chipset];
  const initial = new Uint8Array(EXTRA_LENGTH);
  const writeMask = new Uint8Array(EXTRA_LENGTH);
  const put = (bytes: Uint8Array, offset: number, size: number, value: number): void => {
    for (let i = 0; i < size; i++) bytes[offset - EXTRA_BASE + i] = (value >>> (8 * i)) & 0xff;
  };
  for (const idetim of [CFG.IDETIM_PRIMARY, CFG.IDETIM_SECONDARY]) {
    put(initial, idetim, 2, IDETIM_DECODE_ENABLE);
    put(writeMask, idetim, 2, IDETIM_MASK);
  }
  put(writeMask, CFG.SIDETIM, 1, 0xff);
  if (info.udma) {
    put(writeMask, CFG.UDMACTL, 1, UDMACTL_MASK);
    put(writeMask, CFG.UDMATIM, 2, UDMATIM_MASK);
  }
  if (info.ideConfig) {
    put(initial, CFG.IDE_CONFIG, 2, IDE_CONFIG_PING_PONG | (cable80 ? IDE_CONFIG_CABLE80 : 0));
    put(writeMask, CFG.IDE_CONFIG, 2, IDE_CONFIG_MASK);
  }
  return { offset: EXTRA_BASE, initial, writeMask };
}
