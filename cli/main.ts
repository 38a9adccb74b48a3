/**
 * vstor: VBoxManage-style command line for vstor's machines and media.
 */
import { UsageError } from "./args.js";
import { closemedium, createmedium, listHdds, modifymedium, showmediuminfo } from "./medium-verbs.js";
import { startvm } from "./startvm.js";
import { controlvm, createvm, listVms, showvminfo, unregistervm } from "./vm-verbs.js";

const USAGE = `Usage: vstor <command> [options]

Machines:
  createvm --name NAME --register [--memory MB]
  list vms [--json]
  showvminfo NAME|UUID [--json]
  unregistervm NAME|UUID [--delete]
  startvm NAME|UUID [--type headless] [--script FILE] [--timeout SECONDS]
  controlvm NAME|UUID poweroff|reset

Media:
  createmedium disk --filename FILE --size MB [--format VDI|RAW] [--variant Standard|Fixed]
  createmedium disk --filename FILE --diffparent UUID|FILE
  showmediuminfo [disk] FILE|UUID [--json]
  list hdds [--json]
  modifymedium [disk] FILE|UUID --resize MB | --compact
  closemedium [disk] FILE|UUID [--delete]

Machines and the media registry live under $VSTOR_HOME (default ~/.config/vstor).
`;

const out = (t: string) => void process.stdout.write(t);
const err = (t: string) => void process.stderr.write(t);

async function main(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  switch (verb) {
    case "createvm":
      return createvm(rest, out);
    case "list": {
      const [what, ...more] = rest;
      if (what === "vms") return listVms(more, out);
      if (what === "hdds") return listHdds(more, out);
      throw new UsageError(`list: unknown list '${what ?? ""}' (known: vms, hdds)`);
    }
    case "showvminfo":
      return showvminfo(rest, out);
    case "unregistervm":
      return unregistervm(rest, out);
    case "startvm":
      return startvm(rest, out, err);
    case "controlvm":
      return controlvm(rest, out);
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
