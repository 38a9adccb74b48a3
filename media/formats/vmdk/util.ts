/** Small helpers shared by the VMDK files: error wrapping, full reads, path joins. */
import { MediumError } from "../../block.js";
import type { FileIo } from "../../io/file-io.js";

export { asMediumError, readFully } from "../file-helpers.js";
import { asMediumError, readFully } from "../file-helpers.js";
