/** The VMDK format: open, create, probe, chains, and writing streamOptimized clones. */
export { isVmdk, openVmdk, openVmdkChain, type VmdkOpenOptions } from "./vmdk-open.js";
export { createVmdk, parentLinkOf, SPLIT_SIZE, type VmdkCreateOptions, type VmdkVariant } from "./vmdk-create.js";
export { writeStreamVmdk, type Deflate, type StreamWriteOptions } from "./stream-writer.js";
export { VmdkImage, cidUuid } from "./vmdk-image.js";
export { VmdkDescriptor, type ExtentLine } from "./descriptor.js";
export type { Inflate } from "./sparse-extent.js";
