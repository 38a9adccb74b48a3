/**
 * storagectl and storageattach: a machine's controllers and what is attached to them.
 */
import { allowOnly, optString, parseArgs, requireOpt, UsageError } from "./args.js";
import { MediumManager } from "../media/medium-manager.js";
import { runningSession, sendControl } from "../machine/control-channel.js";
import { checkSlot, DEFAULT_SATA_PORTS, type IdeControllerType, type StorageControllerConfig } from "../machine/storage.js";
import { refuseWhileSaved, VmError, VmStore } from "../machine/vm-store.js";
import type { Out } from "./vm-verbs.js";
import { resolve } from "node:path";
import { openIso } from "../media/formats/iso/iso.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";
import { canonicalLocation } from "../media/registry.js";
import { attachedIndirectly, MEDIUM_TYPES, parseMediumType } from "../media/medium-types.js";
import { setMediumType } from "../machine/medium-type-change.js";
import { createMachineDiff, mediumType } from "../machine/machine-media.js";

const onOff = (name: string, v: string | undefined, dflt: boolean): boolean => {
  if (v === undefined) return dflt;
  if (v === "on") return true;
  if (v === "off") return false;
  throw new UsageError(`--${name} takes on or off, not '${v}'`);
};

const IDE_TYPES: IdeControllerType[] = ["PIIX3", "PIIX4", "ICH6"];

async function editableMachine(name: string, allowRunning = false) {
  const store = new VmStore();
  const vm = store.get(name);
  const running = !!(await runningSession(store.machineDir(vm.name)));
  if (running && !allowRunning) {
    throw new VmError("running", `vstor: machine '${vm.name}' is running; change its storage while it is powered off`);
  }
  refuseWhileSaved(vm);
  return { store, vm, running };
}

export async function storagectl(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv, ["remove"]);
  allowOnly(args, ["name", "add", "controller", "hostiocache", "bootable", "remove", "portcount"]);
  const [machine] = args.positional;
  if (!machine) throw new UsageError("storagectl needs a machine name or UUID");
  const { store, vm } = await editableMachine(machine);
  const name = requireOpt(args, "name");
  const existing = vm.storageControllers.find((c) => c.name === name);
  if (args.options.has("remove")) {
    if (!existing) throw new UsageError(`machine '${vm.name}' has no storage controller '${name}'`);
    vm.storageControllers = vm.storageControllers.filter((c) => c !== existing);
    store.save(vm);
    out(`Storage controller '${name}' removed.\n`);
    return 0;
  }
  const bus = optString(args, "add");
  const portCount = optString(args, "portcount");
  if (existing) {
    if (bus) throw new UsageError(`machine '${vm.name}' already has a storage controller '${name}'`);
    const type = optString(args, "controller");
    if (type) existing.controller = controllerType(existing.bus, type);
    existing.hostIoCache = onOff("hostiocache", optString(args, "hostiocache"), existing.hostIoCache);
    existing.bootable = onOff("bootable", optString(args, "bootable"), existing.bootable);
    if (portCount !== undefined) {
      const n = sataPorts(existing.bus, portCount);
      const beyond = existing.attachments.find((a) => a.port >= n);
      if (beyond) throw new UsageError(`--portcount ${n}: port ${beyond.port} of '${name}' has an attachment; detach it first`);
      existing.portCount = n;
    }
  } else {
    if (bus !== "ide" && bus !== "sata") throw new UsageError(`--add ${bus ?? "(missing)"}: this version has IDE and SATA controllers (--add ide|sata)`);
    if (vm.storageControllers.some((c) => c.bus === bus)) throw new UsageError(`a machine has one ${bus.toUpperCase()} controller`);
    const ctl: StorageControllerConfig = {
      name,
      bus,
      controller: controllerType(bus, optString(args, "controller") ?? (bus === "ide" ? "PIIX4" : "IntelAhci")),
      ...(bus === "sata" ? { portCount: portCount === undefined ? DEFAULT_SATA_PORTS : sataPorts(bus, portCount) } : {}),
      // IDE keeps the host cache by default, SATA does not (VirtualBox's defaults).
      hostIoCache: onOff("hostiocache", optString(args, "hostiocache"), bus === "ide"),
      bootable: onOff("bootable", optString(args, "bootable"), true),
      attachments: [],
    };
    if (bus === "ide" && portCount !== undefined) throw new UsageError("--portcount is for SATA controllers");
    vm.storageControllers.push(ctl);
  }
  store.save(vm);
  out(`Storage controller '${name}' ${existing ? "changed" : "added"}.\n`);
  return 0;
}

function controllerType(bus: StorageControllerConfig["bus"], t: string): StorageControllerConfig["controller"] {
  if (bus === "sata") {
    if (t.toLowerCase() !== "intelahci") throw new UsageError(`--controller ${t}: the SATA controller is IntelAhci`);
    return "IntelAhci";
  }
  const u = t.toUpperCase() as IdeControllerType;
  if (!IDE_TYPES.includes(u)) throw new UsageError(`--controller ${t}: IDE controllers are ${IDE_TYPES.join(", ")}`);
  return u;
}

function sataPorts(bus: StorageControllerConfig["bus"], v: string): number {
  if (bus !== "sata") throw new UsageError("--portcount is for SATA controllers");
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > DEFAULT_SATA_PORTS) throw new UsageError(`--portcount ${v}: 1 to ${DEFAULT_SATA_PORTS}`);
  return n;
}

export async function storageattach(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv, ["forceunmount"]);
  allowOnly(args, ["storagectl", "port", "device", "type", "medium", "mtype", "nonrotational", "discard", "hotpluggable", "tempeject", "forceunmount"]);
  const [machine] = args.positional;
  if (!machine) throw new UsageError("storageattach needs a machine name or UUID");
  const { store, vm, running } = await editableMachine(machine, true);
  const ctlName = requireOpt(args, "storagectl");
  const ctl = vm.storageControllers.find((c) => c.name === ctlName);
  if (!ctl) throw new UsageError(`machine '${vm.name}' has no storage controller '${ctlName}'`);
  const port = Number(requireOpt(args, "port"));
  const device = Number(optString(args, "device") ?? "0");
  if (!Number.isInteger(port) || !Number.isInteger(device)) throw new UsageError("--port and --device take numbers");
  checkSlot(ctl, port, device);
  const mediumArg = requireOpt(args, "medium");
  if (running) {
    const att = ctl.attachments.find((a) => a.port === port && a.device === device);
    const type = optString(args, "type") ?? att?.type ?? "hdd";
    if (ctl.bus === "sata" && type === "hdd") return hotplugOnline(store, vm, ctl, port, mediumArg, args, out);
    return changeDiscOnline(store, vm, ctl, port, device, mediumArg, args.options.has("forceunmount"), out);
  }
  ctl.attachments = ctl.attachments.filter((a) => a.port !== port || a.device !== device);
  if (mediumArg === "none") {
    store.save(vm);
    out(`Port ${port} device ${device} of '${ctlName}' is now empty.\n`);
    return 0;
  }
  const type = optString(args, "type") ?? "hdd";
  if (type !== "hdd" && type !== "dvddrive") throw new UsageError(`--type ${type}: hdd or dvddrive`);
  let medium: string | undefined;
  let image: string | undefined;
  if (type === "dvddrive") {
    if (mediumArg !== "emptydrive") {
      const { medium: iso } = await openIso(new NodeFileOpener(), mediumArg); // refuses what is not ISO 9660
      await iso.close();
      image = await registerDvd(mediumArg);
    }
  } else {
    if (mediumArg === "emptydrive") throw new UsageError("a hard disk attachment needs a medium");
    medium = await diskToAttach(store, vm, ctl, port, device, mediumArg, optString(args, "mtype"));
  }
  ctl.attachments.push({
    port,
    device,
    type,
    medium,
    image,
    nonrotational: onOff("nonrotational", optString(args, "nonrotational"), false),
    discard: onOff("discard", optString(args, "discard"), false),
    hotpluggable: onOff("hotpluggable", optString(args, "hotpluggable"), false),
    tempeject: onOff("tempeject", optString(args, "tempeject"), false),
  });
  store.save(vm);
  out(`Attached ${type === "hdd" ? `medium {${medium}}` : image ? `DVD drive with ${image}` : "an empty DVD drive"} to '${ctlName}' port ${port} device ${device}.\n`);
  return 0;
}

/** An ISO image becomes a known DVD medium (list dvds), with a UUID of its own as in VirtualBox. */
async function registerDvd(path: string): Promise<string> {
  return (await new MediumManager().registerDvd(canonicalLocation(resolve(path)))).location;
}

/**
 * Register the disk if needed, set its type (--mtype), and return what the slot attaches: the
 * medium itself, or for an immutable or multiattach medium a new differencing image of this
 * machine over it. Refused when the machine already uses the medium in another slot.
 */
async function diskToAttach(store: VmStore, vm: ReturnType<VmStore["get"]>, ctl: StorageControllerConfig, port: number, device: number, mediumArg: string, mtype: string | undefined): Promise<string> {
  const mm = new MediumManager();
  const medium = (mm.registry.find(mediumArg) ?? (await mm.register(mediumArg))).uuid;
  const elsewhere = vm.storageControllers.some((c) => c.attachments.some((a) => a.medium === medium && !(c.name === ctl.name && a.port === port && a.device === device)));
  if (elsewhere) throw new VmError("invalid", `vstor: medium {${medium}} is already attached to machine '${vm.name}'`);
  if (mtype !== undefined) {
    const type = parseMediumType(mtype);
    if (!type) throw new UsageError(`--mtype ${mtype}: one of ${MEDIUM_TYPES.join(", ")}`);
    await setMediumType(mm, medium, type, store.list().filter((m) => m.uuid !== vm.uuid));
  }
  const type = mediumType(mm, medium);
  const rec = mm.requireRecord(medium);
  if (attachedIndirectly(type) && !rec.parentUuid) return createMachineDiff(mm, store.machineDir(vm.name), medium);
  return medium;
}

/**
 * A running machine's SATA port: plug a disk in (`--medium` a disk) or pull it out (`--medium
 * none`). The port must be empty and hot-pluggable, or hold a disk attached with --hotpluggable
 * on. The running VM does it through its control channel and records it in the configuration.
 */
async function hotplugOnline(
  store: VmStore,
  vm: ReturnType<VmStore["get"]>,
  ctl: StorageControllerConfig,
  port: number,
  mediumArg: string,
  args: ReturnType<typeof parseArgs>,
  out: Out,
): Promise<number> {
  let medium = "";
  if (mediumArg !== "none") {
    if (mediumArg === "emptydrive") throw new UsageError("a hard disk attachment needs a medium");
    medium = await diskToAttach(store, vm, ctl, port, 0, mediumArg, optString(args, "mtype"));
  }
  const flags = [
    onOff("nonrotational", optString(args, "nonrotational"), false) ? "nonrotational" : "",
    onOff("discard", optString(args, "discard"), false) ? "discard" : "",
  ];
  const reply = await sendControl(store.machineDir(vm.name), { command: "hotplug", args: [ctl.name, String(port), medium, ...flags] });
  if (!reply.ok) throw new VmError("running", `vstor: could not ${medium ? "hot-plug the disk" : "unplug the disk"}: ${reply.error}`);
  out(medium ? `Hot-plugged medium {${medium}} into '${ctl.name}' port ${port}.\n` : `Unplugged the disk from '${ctl.name}' port ${port}.\n`);
  return 0;
}

/**
 * A running machine: only the disc in an existing DVD drive can change (disk hot-plug needs a
 * hot-plug capable controller). The running VM does it through its control channel and records
 * the new disc in the machine's configuration.
 */
async function changeDiscOnline(
  store: VmStore,
  vm: ReturnType<VmStore["get"]>,
  ctl: StorageControllerConfig,
  port: number,
  device: number,
  mediumArg: string,
  force: boolean,
  out: Out,
): Promise<number> {
  const att = ctl.attachments.find((a) => a.port === port && a.device === device);
  if (att?.type !== "dvddrive") {
    throw new VmError("running", `vstor: machine '${vm.name}' is running; only the disc in a DVD drive can change now (port ${port} device ${device} is not a DVD drive)`);
  }
  let image: string | undefined;
  if (mediumArg !== "emptydrive" && mediumArg !== "none") {
    const { medium } = await openIso(new NodeFileOpener(), mediumArg);
    await medium.close();
    image = await registerDvd(mediumArg);
  }
  const reply = await sendControl(store.machineDir(vm.name), { command: "changedisc", args: [ctl.name, String(port), String(device), image ?? "", force ? "force" : ""] });
  if (!reply.ok) throw new VmError("running", `vstor: could not change the disc: ${reply.error}`);
  // The running VM has recorded the new disc in the configuration itself.
  out(image ? `Inserted ${image} into '${ctl.name}' port ${port} device ${device}.\n` : `Ejected the disc from '${ctl.name}' port ${port} device ${device}.\n`);
  return 0;
}
