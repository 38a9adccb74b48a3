/**
 * vstor: VBoxManage-style command line for vstor's machines and media.
 */
import { UsageError } from "./args.js";
import { checkmedium, clonemedium, closemedium, createmedium, modifymedium, showmediuminfo } from "./medium-verbs.js";
import { mediumproperty } from "./medium-admin-verbs.js";
import { listDvds, listHdds } from "./medium-view.js";
import { startvm } from "./startvm.js";
import { snapshot } from "./snapshot-verbs.js";
import { clonevm } from "./clonevm.js";
import { storageattach, storagectl } from "./storage-verbs.js";
import { controlvm, createvm, discardstate, modifyvm, listVms, showvminfo, unregistervm } from "./vm-verbs.js";

const USAGE = `Usage: vstor <command> [options]

Machines:
  createvm --name NAME --register [--memory MB]
  modifyvm NAME|UUID [--boot1 kernel|disk|dvd] [--memory MB]
      kernel (default): v86 loads the bundled guest kernel; disk/dvd: SeaBIOS boots the
      first bootable hard disk / CD (e.g. build/guest/boot.img or boot.iso)
  list vms [--json]
  showvminfo NAME|UUID [--json]
  unregistervm NAME|UUID [--delete]   --delete: also the hard disk images no other machine uses
  startvm NAME|UUID [--type headless] [--script FILE | --agent] [--timeout SECONDS]
      console on this terminal; --script: run FILE in the guest and exit with its status;
      --agent: no console, keep running for controlvm (runscript, savestate, poweroff).
      A saved machine resumes its saved state. Immutable disks are reset here (not on reset).
  controlvm NAME|UUID poweroff|reset|savestate
  controlvm NAME|UUID runscript FILE [--timeout SECONDS]   run FILE in an --agent guest
  clonevm NAME|UUID --name NEW --register   a new machine with copies of the disks as they
      are now (chains flattened, new UUIDs and serials; shareable disks attached, not copied)
  discardstate NAME|UUID     forget a saved state (settings cannot change while one exists)
  snapshot NAME|UUID take SNAP [--description TEXT] [--live] [--json]
  snapshot NAME|UUID restore SNAP | restorecurrent | delete SNAP | list [--json]
  snapshot NAME|UUID edit SNAP [--name NEW] [--description TEXT]
      take freezes every disk that is not writethrough or shareable (each gets a new
      differencing image) and, if the machine runs, saves its state too (--live: without
      pausing it); restore needs it powered off; delete merges, online too
  storagectl NAME --name CTL --add ide [--controller PIIX3|PIIX4|ICH6] [--hostiocache on|off] [--bootable on|off]
  storagectl NAME --name CTL --add sata [--controller IntelAhci] [--portcount 1-30] [--hostiocache on|off] [--bootable on|off]
  storagectl NAME --name CTL --remove
  storageattach NAME --storagectl CTL --port N --device N --type hdd|dvddrive
                --medium FILE|UUID|emptydrive|none [--nonrotational on|off] [--discard on|off]
                [--hotpluggable on|off] [--tempeject on|off] [--forceunmount]
                [--mtype normal|writethrough|immutable|shareable|multiattach]
      IDE: ports 0-1, devices 0-1; SATA: ports 0..portcount-1, device 0. While the machine
      runs: change or eject a DVD disc, or hot-plug/unplug a disk on a SATA port

Media:
  createmedium disk --filename FILE --size MB [--format VDI|VMDK|VHD|HDD|QCOW2|RAW]
               [--variant Standard|Fixed|Split2G[,Fixed]|Stream|ESX] [--json]
      HDD is Parallels; Split2G, Stream and ESX are VMDK only; QCOW2 is Standard only.
      Formats are detected by content, never by file name
  createmedium disk --filename FILE --diffparent UUID|FILE [--format VDI|VMDK|VHD|QCOW2] [--json]
      a differencing image (default: the parent's format; VDI over VMDK/VHD, QCOW2 over any)
  createmedium disk --filename FILE.vmdk --variant RawDisk --property RawDrive=DEV [--property Partitions=1,3]
  showmediuminfo [disk] FILE|UUID [--json]
      type, auto-reset, description, properties and the machines (and snapshots) using it
  showmediuminfo dvd FILE|UUID [--json]     an ISO image: its volume ID, read-only
  list hdds|dvds [--json]
      the media trees: each base, then its differencing images indented under it
  modifymedium [disk] FILE|UUID --resize MB | --compact [--json]
      resize grows VDI, VHD, QCOW2 and RAW; compact is VDI
  modifymedium [disk|dvd] FILE|UUID [--type normal|writethrough|immutable|shareable|readonly|multiattach]
               [--autoreset on|off] [--description TEXT] [--move PATH] [--setuuid [UUID]]
               [--setparentuuid UUID] [--release] [--json]
      --type: set on a base medium, with VirtualBox's rules (shareable: fixed-size only;
      writethrough/shareable/readonly: no differencing children; immutable/multiattach: not
      attached); --autoreset: an immutable base (for its differencing images) or a differencing
      image; --move PATH: a new file name or a folder (VMDK extents go along; children that name
      it by file are re-linked); --setuuid (no UUID: a random one) / --setparentuuid: repair the
      identity written in the image (VDI, VMDK, VHD; qcow2, HDD and RAW in the registry only);
      --release: detach it from the current state of every machine using it. Refused while a
      machine using the medium runs
  mediumproperty [disk|dvd] set FILE|UUID NAME VALUE
  mediumproperty [disk|dvd] get FILE|UUID NAME       prints "Value: ..."; exit 1 if unset
  mediumproperty [disk|dvd] delete FILE|UUID NAME
  closemedium [disk|dvd] FILE|UUID [--delete] [--json]
      refused while a machine's current state or a snapshot uses it
  checkmedium [disk] FILE|UUID [--json]
      read-only check; exit 0: no errors (leaked space and a modified parent are
      warnings; qemu-img check would exit 3 for leaks), 2: corrupt or broken chain
  clonemedium [disk] FILE|UUID FILE|UUID [--format VDI|VMDK|VHD|HDD|QCOW2|RAW]
              [--variant Standard|Fixed|Split2G[,Fixed]|Stream|ESX] [--existing] [--json]
      copy what the guest sees (a differencing chain flattened) into a new image with a
      new UUID (default: the source's format), or with --existing into an existing
      medium at least as large, keeping its UUID; alias clonehd

Long resize/compact/clone work shows progress on stderr (VSTOR_PROGRESS=0 hides it, =1 shows it at once).

Machines and the media registry live under $VSTOR_HOME (default ~/.config/vstor).
`;

const out = (t: string) => void process.stdout.write(t);
const err = (t: string) => void process.stderr.write(t);

async function main(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  switch (verb) {
    case "createvm":
      return createvm(rest, out);
    case "modifyvm":
      return modifyvm(rest, out);
    case "list": {
      const [what, ...more] = rest;
      if (what === "vms") return listVms(more, out);
      if (what === "hdds") return listHdds(more, out);
      if (what === "dvds") return listDvds(more, out);
      throw new UsageError(`list: unknown list '${what ?? ""}' (known: vms, hdds, dvds)`);
    }
    case "showvminfo":
      return showvminfo(rest, out);
    case "unregistervm":
      return unregistervm(rest, out);
    case "startvm":
      return startvm(rest, out, err);
    case "clonevm":
      return clonevm(rest, out);
    case "discardstate":
      return discardstate(rest, out);
    case "snapshot":
      return snapshot(rest, out);
    case "controlvm":
      return controlvm(rest, out);
    case "storagectl":
      return storagectl(rest, out);
    case "storageattach":
      return storageattach(rest, out);
    case "createmedium":
    case "createhd":
      return createmedium(rest, out);
    case "showmediuminfo":
    case "showhdinfo":
      return showmediuminfo(rest, out);
    case "closemedium":
      return closemedium(rest, out);
    case "modifymedium":
    case "modifyhd":
      return modifymedium(rest, out);
    case "mediumproperty":
      return mediumproperty(rest, out);
    case "checkmedium":
      return checkmedium(rest, out);
    case "clonemedium":
    case "clonehd":
      return clonemedium(rest, out);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      out(USAGE);
      return verb === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command '${verb}'`);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: Error) => {
    if (e instanceof UsageError) err(`vstor: ${e.message}\n\n${USAGE}`);
    else err(`${e.message.startsWith("vstor:") ? "" : "vstor: "}${e.message}\n`);
    process.exit(e instanceof UsageError ? 2 : 1);
  },
);
