/**
 * Machine definitions, persisted as JSON under VSTOR_HOME (default ~/.config/vstor), written
 * atomically (write, then rename) so a crash never leaves half a file.
 *
 *   VSTOR_HOME/vms.json                 the registered machines: name, uuid, definition path
 *   VSTOR_HOME/machines/NAME/NAME.json  one machine's definition
 */
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { vstorHome, writeJsonAtomic } from "../media/io/node/persist.js";
import type { StorageControllerConfig } from "./storage.js";

export { vstorHome, writeJsonAtomic };

export type BootDevice = "kernel" | "disk" | "dvd";
export const BOOT_DEVICES: readonly BootDevice[] = ["kernel", "disk", "dvd"];

export interface MachineDefinition {
  uuid: string;
  name: string;
  createdAt: string;
  memoryMiB: number;
  /**
   * What the machine boots (modifyvm --boot1): "disk" or "dvd" through SeaBIOS from the first
   * bootable hard disk or CD/DVD, or "kernel" (default): v86 loads the bundled guest kernel and
   * initramfs directly, and the attached media are data disks.
   */
  boot1?: BootDevice;
  /** Storage controllers and their attachments (storagectl, storageattach). */
  storageControllers: StorageControllerConfig[];
  state: "poweroff" | "saved";
  /** A saved machine state (controlvm savestate, or a restored online snapshot), restored by the next startvm. */
  savedStateFile?: string;
  /** The root of the snapshot tree (snapshot take). */
  snapshot?: SnapshotRecord;
  /** UUID of the snapshot the current state derives from. */
  currentSnapshot?: string;
  /**
   * A snapshot deletion under way (its merges are journaled here before they start), so an
   * interrupted `snapshot delete` can be run again to finish, and the machine is not started on a
   * half-merged chain meanwhile.
   */
  pendingDelete?: { snapshot: string; startedAt: string; merges: SnapshotMerge[] };
}

/**
 * One disk's merge when a snapshot is deleted: the snapshot's frozen image and its only child
 * become one image. "parent": the child's data goes into the frozen image, which then stands in
 * for the child; "child": the frozen image's data goes into the child, which takes its parent.
 */
export interface SnapshotMerge {
  frozen: string;
  child: string;
  into: "parent" | "child";
}

/** One snapshot: the machine's settings and media as they were when it was taken. */
export interface SnapshotRecord {
  uuid: string;
  name: string;
  description?: string;
  takenAt: string;
  /** Taken of a running machine: its saved state (CPU, RAM, devices) in this file. */
  stateFile?: string;
  memoryMiB: number;
  boot1?: BootDevice;
  /** Controllers and attachments at the time: hard disks name the frozen media. */
  storageControllers: StorageControllerConfig[];
  children: SnapshotRecord[];
}

interface RegistryEntry {
  name: string;
  uuid: string;
  path: string;
}

export class VmError extends Error {
  constructor(
    readonly kind: "not-found" | "exists" | "invalid" | "running" | "not-running",
    message: string,
  ) {
    super(message);
    this.name = "VmError";
  }
}

/**
 * A saved state holds the devices as they were: changing the hardware under it would make it
 * unrestorable, so settings wait until the state is resumed or discarded (as in VirtualBox).
 */
export function refuseWhileSaved(vm: MachineDefinition): void {
  if (vm.state === "saved") {
    throw new VmError("invalid", `vstor: machine '${vm.name}' has a saved state; start it (or 'vstor discardstate ${vm.name}') before changing its settings`);
  }
}

const VALID_NAME = /^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/;

export class VmStore {
  constructor(readonly home = vstorHome()) {}

  private get registryPath(): string {
    return join(this.home, "vms.json");
  }

  private registry(): RegistryEntry[] {
    if (!existsSync(this.registryPath)) return [];
    try {
      return (JSON.parse(readFileSync(this.registryPath, "utf8")) as { machines: RegistryEntry[] }).machines;
    } catch (e) {
      throw new VmError("invalid", `vstor: ${this.registryPath} is not valid JSON (${(e as Error).message})`);
    }
  }

  private saveRegistry(entries: RegistryEntry[]): void {
    writeJsonAtomic(this.registryPath, { machines: entries });
  }

  machineDir(name: string): string {
    return join(this.home, "machines", name);
  }

  create(name: string, opts: { memoryMiB?: number } = {}): MachineDefinition {
    if (!VALID_NAME.test(name)) throw new VmError("invalid", `vstor: '${name}' is not a valid machine name`);
    const entries = this.registry();
    if (entries.some((e) => e.name === name)) throw new VmError("exists", `vstor: a machine named '${name}' is already registered`);
    const path = join(this.machineDir(name), `${name}.json`);
    if (existsSync(path)) throw new VmError("exists", `vstor: ${path} already exists; unregister or remove it first`);
    const vm: MachineDefinition = {
      uuid: randomUUID(),
      name,
      createdAt: new Date().toISOString(),
      memoryMiB: opts.memoryMiB ?? 128,
      storageControllers: [],
      state: "poweroff",
    };
    writeJsonAtomic(path, vm);
    entries.push({ name, uuid: vm.uuid, path });
    this.saveRegistry(entries);
    return vm;
  }

  list(): MachineDefinition[] {
    return this.registry().map((e) => this.readDefinition(e));
  }

  private readDefinition(e: RegistryEntry): MachineDefinition {
    try {
      return JSON.parse(readFileSync(e.path, "utf8")) as MachineDefinition;
    } catch (err) {
      throw new VmError("invalid", `vstor: cannot read machine '${e.name}' from ${e.path}: ${(err as Error).message}`);
    }
  }

  /** Find a machine by name or UUID. */
  get(nameOrUuid: string): MachineDefinition {
    const e = this.registry().find((r) => r.name === nameOrUuid || r.uuid === nameOrUuid);
    if (!e) throw new VmError("not-found", `vstor: no machine named '${nameOrUuid}' is registered`);
    return this.readDefinition(e);
  }

  save(vm: MachineDefinition): void {
    const e = this.registry().find((r) => r.uuid === vm.uuid);
    if (!e) throw new VmError("not-found", `vstor: machine '${vm.name}' is not registered`);
    writeJsonAtomic(e.path, vm);
  }

  unregister(nameOrUuid: string, opts: { delete?: boolean } = {}): MachineDefinition {
    const vm = this.get(nameOrUuid);
    this.saveRegistry(this.registry().filter((r) => r.uuid !== vm.uuid));
    if (opts.delete) rmSync(this.machineDir(vm.name), { recursive: true, force: true });
    return vm;
  }
}
