/**
 * Machine verbs: createvm, modifyvm, list vms, showvminfo, unregistervm, controlvm.
 */
import { allowOnly, optNumber, optString, parseArgs, requireOpt, UsageError } from "./args.js";
import { runningSession, sendControl } from "../machine/control-channel.js";
import { BOOT_DEVICES, refuseWhileSaved, VmError, VmStore, type BootDevice } from "../machine/vm-store.js";
import { discardSavedState } from "../machine/snapshots.js";
import { deleteMachineMedia } from "../machine/machine-media.js";
import { MediumManager } from "../media/medium-manager.js";
import { readFileSync } from "node:fs";
import { snapshotTreeJson, snapshotTreeText } from "./snapshot-verbs.js";

export type Out = (text: string) => void;

export async function createvm(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv, ["register"]);
  allowOnly(args, ["name", "register", "memory", "json"]);
  const name = requireOpt(args, "name");
  if (!args.options.has("register")) throw new UsageError("createvm without --register is not supported: vstor keeps every machine in its registry");
  const vm = new VmStore().create(name, { memoryMiB: optNumber(args, "memory") });
  if (args.options.has("json")) out(JSON.stringify(vm));
  else out(`Virtual machine '${vm.name}' is created and registered.\nUUID: ${vm.uuid}\n`);
  return 0;
}

/** modifyvm: settings of a powered-off machine (--boot1, --memory). */
export async function modifyvm(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv);
  allowOnly(args, ["boot1", "memory"]);
  const [name] = args.positional;
  if (!name) throw new UsageError("modifyvm needs a machine name or UUID");
  const store = new VmStore();
  const vm = store.get(name);
  if (await runningSession(store.machineDir(vm.name))) {
    throw new VmError("running", `vstor: machine '${vm.name}' is running; change its settings while it is powered off`);
  }
  refuseWhileSaved(vm);
  const boot = optString(args, "boot1");
  if (boot !== undefined) {
    if (!BOOT_DEVICES.includes(boot as BootDevice)) throw new UsageError(`--boot1 ${boot}: one of ${BOOT_DEVICES.join(", ")}`);
    vm.boot1 = boot as BootDevice;
  }
  const memory = optNumber(args, "memory");
  if (memory !== undefined) {
    if (!Number.isInteger(memory) || memory < 96 || memory > 2047) throw new UsageError(`--memory ${memory}: 96 to 2047 (MB)`);
    vm.memoryMiB = memory;
  }
  store.save(vm);
  out(`Machine '${vm.name}' changed.\n`);
  return 0;
}

export async function listVms(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv, ["json"]);
  allowOnly(args, ["json"]);
  const vms = new VmStore().list();
  if (args.options.has("json")) out(JSON.stringify(vms.map((v) => ({ name: v.name, uuid: v.uuid }))));
  else out(vms.map((v) => `"${v.name}" {${v.uuid}}\n`).join(""));
  return 0;
}

export async function showvminfo(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv, ["json"]);
  allowOnly(args, ["json"]);
  const [name] = args.positional;
  if (!name) throw new UsageError("showvminfo needs a machine name or UUID");
  const store = new VmStore();
  const vm = store.get(name);
  const session = await runningSession(store.machineDir(vm.name));
  const state = session ? "running" : vm.state === "saved" ? "saved" : "powered off";
  if (args.options.has("json")) {
    out(JSON.stringify({ ...vm, state, pid: session?.pid, snapshots: snapshotTreeJson(vm.snapshot) }));
    return 0;
  }
  out(
    [
      `Name:            ${vm.name}`,
      `UUID:            ${vm.uuid}`,
      `Config file:     ${store.machineDir(vm.name)}/${vm.name}.json`,
      `Memory size:     ${vm.memoryMiB}MB`,
      `Boot device:     ${vm.boot1 ?? "kernel"}${(vm.boot1 ?? "kernel") === "kernel" ? " (the bundled guest kernel, loaded directly)" : " (through the BIOS)"}`,
      `State:           ${state}${session ? ` (pid ${session.pid})` : ""}`,
      `Storage Controllers: ${vm.storageControllers.length ? "" : "none"}`,
      ...vm.storageControllers.flatMap((c) => [
        `  ${c.name}: ${c.bus.toUpperCase()} ${c.controller}${c.portCount !== undefined ? `, ${c.portCount} ports` : ""} (host I/O cache ${c.hostIoCache ? "on" : "off"}, bootable ${c.bootable ? "on" : "off"})`,
        ...[...c.attachments].sort((a, b) => a.port - b.port || a.device - b.device).map((a) =>
          `    port ${a.port} device ${a.device}: ${a.type === "hdd" ? `disk {${a.medium}}` : a.image ? `DVD drive (${a.image})` : "DVD drive (empty)"}` +
          `${a.nonrotational ? ", non-rotational" : ""}${a.discard ? ", discard" : ""}${a.hotpluggable ? ", hot-pluggable" : ""}${a.tempeject ? ", temporary eject" : ""}`),
      ]),
      ...(vm.snapshot ? ["Snapshots:", ...snapshotTreeText(vm).map((l) => `   ${l}`)] : []),
      ...(vm.savedStateFile ? [`Saved state:     ${vm.savedStateFile}`] : []),
      "",
    ].join("\n"),
  );
  return 0;
}

export async function unregistervm(argv: string[], out: Out): Promise<number> {
  const args = parseArgs(argv, ["delete"]);
  allowOnly(args, ["delete"]);
  const [name] = args.positional;
  if (!name) throw new UsageError("unregistervm needs a machine name or UUID");
  const store = new VmStore();
  const vm = store.get(name);
  if (await runningSession(store.machineDir(vm.name))) throw new VmError("running", `vstor: machine '${vm.name}' is running; power it off first`);
  if (args.options.has("delete")) {
    const mm = new MediumManager();
    const gone = await deleteMachineMedia(mm, vm, store.list().filter((m) => m.uuid !== vm.uuid));
    if (gone.length) out(`Deleted ${gone.length} hard disk image${gone.length === 1 ? "" : "s"} no other machine uses.\n`);
  }
  store.unregister(name, { delete: args.options.has("delete") });
  out(`Machine '${vm.name}' unregistered${args.options.has("delete") ? " and its files deleted" : ""}.\n`);
  return 0;
}

/** discardstate: forget a saved state; the next start is a cold boot. */
export async function discardstate(argv: string[], out: Out): Promise<number> {
  const [name] = argv;
  if (!name) throw new UsageError("discardstate needs a machine name or UUID");
  const store = new VmStore();
  const vm = store.get(name);
  if (await runningSession(store.machineDir(vm.name))) throw new VmError("running", `vstor: machine '${vm.name}' is running`);
  if (vm.state !== "saved") throw new VmError("invalid", `vstor: machine '${vm.name}' has no saved state`);
  discardSavedState(vm);
  store.save(vm);
  out(`The saved state of '${vm.name}' is discarded.\n`);
  return 0;
}

const CONTROL_COMMANDS = ["poweroff", "reset", "savestate", "runscript"];

export async function controlvm(argv: string[], out: Out): Promise<number> {
  const [name, command, ...rest] = argv;
  if (!name || !command) throw new UsageError(`controlvm needs a machine and a command (${CONTROL_COMMANDS.join(", ")})`);
  if (!CONTROL_COMMANDS.includes(command)) throw new UsageError(`controlvm: unknown command '${command}' (known: ${CONTROL_COMMANDS.join(", ")})`);
  const store = new VmStore();
  const vm = store.get(name);
  if (command === "runscript") {
    // Runs a shell script in the guest through its agent (startvm --agent) and passes on its output and status.
    const args = parseArgs(rest);
    allowOnly(args, ["timeout"]);
    const [file] = args.positional;
    if (!file) throw new UsageError("controlvm runscript needs a script file");
    const timeoutS = optNumber(args, "timeout") ?? 600;
    const reply = await sendControl(store.machineDir(vm.name), { command, args: [readFileSync(file, "utf8"), String(timeoutS)] }, timeoutS * 1000 + 10_000);
    if (!reply.ok) throw new VmError("not-running", `vstor: controlvm runscript failed for '${vm.name}': ${reply.error}`);
    const r = reply.data as { status: number; output: string };
    out(r.output.endsWith("\n") || !r.output ? r.output : r.output + "\n");
    return r.status;
  }
  const reply = await sendControl(store.machineDir(vm.name), { command, args: rest }, command === "savestate" || command === "reset" ? 600_000 : 30_000);
  if (!reply.ok) throw new VmError("not-running", `vstor: controlvm ${command} failed for '${vm.name}': ${reply.error}`);
  if (command === "savestate") {
    // The machine process exits once the state is written: wait for it, so the next command finds it stopped.
    for (let i = 0; i < 600 && (await runningSession(store.machineDir(vm.name))); i++) await new Promise((r) => setTimeout(r, 100));
    out(`savestate: the state of '${vm.name}' is saved; startvm resumes it\n`);
    return 0;
  }
  out(`${command}: done\n`);
  return 0;
}
