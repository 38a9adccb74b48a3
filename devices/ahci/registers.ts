/**
 * AHCI 1.1 register map (Serial ATA AHCI 1.1, sections 3 and 4): the generic host control block
 * at ABAR + 00h, one 80h-byte register block per port from ABAR + 100h, the received-FIS area
 * layout and the command list / command table structures in guest memory. Names follow the
 * specification so the code can be read beside it.
 */

/** Version register: AHCI 1.1 (no CAP2/BOHC, which are 1.2). */
export const AHCI_VERSION = 0x0001_0100;

/** Ports: at most 30 in our ABAR (0x100 + 30 * 0x80 = 4 KiB; the BAR is 8 KiB like VirtualBox's). */
export const MAX_PORTS = 30;
export const PORT_BASE = 0x100;
export const PORT_STRIDE = 0x80;
export const ABAR_SIZE = 0x2000;
/** ABAR is BAR5. */
export const ABAR_INDEX = 5;
/** 32 command slots per port (CAP.NCS = 31). */
export const SLOTS = 32;

/** Generic host control registers. */
export const HBA_REG = {
  CAP: 0x00,
  GHC: 0x04,
  IS: 0x08,
  PI: 0x0c,
  VS: 0x10,
  CCC_CTL: 0x14,
  CCC_PORTS: 0x18,
  EM_LOC: 0x1c,
  EM_CTL: 0x20,
} as const;

/** CAP bits. */
export const CAP = {
  S64A: 0x8000_0000,
  SNCQ: 1 << 30,
  SSNTF: 1 << 29,
  SMPS: 1 << 28,
  SSS: 1 << 27,
  SALP: 1 << 26,
  SAL: 1 << 25,
  SCLO: 1 << 24,
  ISS_SHIFT: 20,
  SAM: 1 << 18,
  SPM: 1 << 17,
  FBSS: 1 << 16,
  PMD: 1 << 15,
  SSC: 1 << 14,
  PSC: 1 << 13,
  NCS_SHIFT: 8,
  CCCS: 1 << 7,
  EMS: 1 << 6,
  SXS: 1 << 5,
} as const;

/** Interface speed: Gen 2 (3.0 Gbps), what IDENTIFY word 76 offers too. */
export const ISS_GEN2 = 2;

/** GHC bits. */
export const GHC = {
  AE: 0x8000_0000,
  MRSM: 1 << 2,
  IE: 1 << 1,
  HR: 1 << 0,
} as const;

/** Port registers (offsets within a port's block). */
export const PORT_REG = {
  CLB: 0x00,
  CLBU: 0x04,
  FB: 0x08,
  FBU: 0x0c,
  IS: 0x10,
  IE: 0x14,
  CMD: 0x18,
  TFD: 0x20,
  SIG: 0x24,
  SSTS: 0x28,
  SCTL: 0x2c,
  SERR: 0x30,
  SACT: 0x34,
  CI: 0x38,
  SNTF: 0x3c,
} as const;

/** PxIS bits (PxIE uses the same positions with an E for S). */
export const PxIS = {
  CPDS: 0x8000_0000,
  TFES: 1 << 30,
  HBFS: 1 << 29,
  HBDS: 1 << 28,
  IFS: 1 << 27,
  INFS: 1 << 26,
  OFS: 1 << 24,
  IPMS: 1 << 23,
  /** Mirrors PxSERR.DIAG.N (read-only here). */
  PRCS: 1 << 22,
  DMPS: 1 << 7,
  /** Mirrors PxSERR.DIAG.X (read-only here). */
  PCS: 1 << 6,
  DPS: 1 << 5,
  /** Mirrors PxSERR.DIAG.F (read-only here). */
  UFS: 1 << 4,
  SDBS: 1 << 3,
  DSS: 1 << 2,
  PSS: 1 << 1,
  DHRS: 1 << 0,
} as const;

/** PxIS bits software clears by writing 1 (PCS, PRCS and UFS follow PxSERR instead). */
export const PxIS_W1C = (0xfdc0_00ff & ~(PxIS.PRCS | PxIS.PCS | PxIS.UFS)) >>> 0;
/** Enable bits that exist (no mechanical presence switch, no cold presence detect). */
export const PxIE_MASK = (0xfdc0_00ff & ~(PxIS.DMPS | PxIS.CPDS)) >>> 0;
/** Fatal errors: the port stops processing the command list until ST is cleared (AHCI 6.1.2). */
export const PxIS_FATAL = (PxIS.TFES | PxIS.HBFS | PxIS.HBDS | PxIS.IFS) >>> 0;

/** PxCMD bits. */
export const PxCMD = {
  ST: 1 << 0,
  SUD: 1 << 1,
  POD: 1 << 2,
  CLO: 1 << 3,
  FRE: 1 << 4,
  CCS_SHIFT: 8,
  CCS_MASK: 0x1f << 8,
  MPSS: 1 << 13,
  FR: 1 << 14,
  CR: 1 << 15,
  CPS: 1 << 16,
  PMA: 1 << 17,
  HPCP: 1 << 18,
  MPSP: 1 << 19,
  CPD: 1 << 20,
  ESP: 1 << 21,
  ATAPI: 1 << 24,
  DLAE: 1 << 25,
  ALPE: 1 << 26,
  ASP: 1 << 27,
  ICC_SHIFT: 28,
  ICC_MASK: 0xf000_0000,
} as const;

/** PxCMD bits the guest stores as plain read/write bits. */
export const PxCMD_RW = PxCMD.ATAPI | PxCMD.DLAE;

/** PxSSTS / PxSCTL fields. */
export const SSTS = {
  DET_MASK: 0xf,
  /** Device present, no Phy communication (COMRESET asserted). */
  DET_PRESENT: 1,
  /** Device present and Phy communication established. */
  DET_ONLINE: 3,
  /** Phy offline (SCTL.DET = 4). */
  DET_OFFLINE: 4,
  SPD_SHIFT: 4,
  /** Interface active. */
  IPM_ACTIVE: 1 << 8,
} as const;

export const SCTL = {
  DET_MASK: 0xf,
  /** Perform interface initialization (COMRESET) while written. */
  DET_COMRESET: 1,
  /** Disable the interface, put the Phy offline. */
  DET_OFFLINE: 4,
  SPD_SHIFT: 4,
  /** Bits software may write (DET, SPD, IPM); the rest read 0. */
  WRITABLE: 0xfff,
} as const;

/** PxSERR.DIAG bits (upper half) and ERR bits (lower half). */
export const SERR = {
  /** Exchanged: a change in device presence. */
  DIAG_X: 1 << 26,
  /** Unknown FIS type. */
  DIAG_F: 1 << 25,
  /** PhyRdy change. */
  DIAG_N: 1 << 16,
} as const;

/** Device signatures (PxSIG: LBA high, LBA mid, LBA low, count). */
export const SIG = {
  ATA: 0x0000_0101,
  ATAPI: 0xeb14_0101,
  NONE: 0xffff_ffff,
} as const;

/** PxTFD when nothing answers (no device, link down): the bus floats. */
export const TFD_NO_DEVICE = 0x7f;
/** PxTFD while a device is present but its reset signature has not arrived. */
export const TFD_BUSY = 0x80;

/** Received-FIS area: 256 bytes at PxFB, 256-byte aligned. */
export const RX_FIS = {
  DSFIS: 0x00,
  PSFIS: 0x20,
  RFIS: 0x40,
  SDBFIS: 0x58,
  UFIS: 0x60,
  SIZE: 0x100,
} as const;

/** Command list: 32 headers of 32 bytes at PxCLB (1 KiB aligned). */
export const CMD_HEADER_SIZE = 32;
export const CMD_LIST_SIZE = SLOTS * CMD_HEADER_SIZE;

/** Command header DW0 bits. */
export const CMD_HEADER = {
  CFL_MASK: 0x1f,
  A: 1 << 5,
  W: 1 << 6,
  P: 1 << 7,
  R: 1 << 8,
  B: 1 << 9,
  C: 1 << 10,
  PMP_SHIFT: 12,
  PRDTL_SHIFT: 16,
} as const;

/** Command table: CFIS at 0, ATAPI command at 40h, PRDT at 80h (table base 128-byte aligned). */
export const CMD_TABLE = {
  CFIS: 0x00,
  CFIS_SIZE: 0x40,
  ACMD: 0x40,
  ACMD_SIZE: 0x10,
  PRDT: 0x80,
  ALIGN_MASK: 0x7f,
} as const;

/** One PRDT entry: DBA, DBAU, reserved, DW3 = I (bit 31) | DBC (21:0, byte count - 1, bit 0 set). */
export const PRD_SIZE = 16;
export const PRD_DBC_MASK = 0x3f_ffff;
export const PRD_I = 0x8000_0000;
/** PRDTL is 16 bits: the most entries a command can have. */
export const MAX_PRDT_ENTRIES = 0xffff;

/** Register offset of a port's block, or undefined when `offset` is in the generic block. */
export function portOf(offset: number): { port: number; reg: number } | undefined {
  if (offset < PORT_BASE) return undefined;
  const port = Math.floor((offset - PORT_BASE) / PORT_STRIDE);
  return { port, reg: (offset - PORT_BASE) % PORT_STRIDE };
}
