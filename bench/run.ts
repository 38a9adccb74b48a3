/**
 * `make bench`: every benchmark prints its figure beside a peer measured in the same run.
 * BENCH=io, BENCH=media, BENCH=formats, BENCH=merge, BENCH=boot, BENCH=ide or BENCH=sata runs one
 * of them.
 */
import { bootBench } from "./boot.js";
import { formatsBench } from "./formats.bench.js";
import { ideBench } from "./ide.bench.js";
import { ioBench } from "./io.bench.js";
import { mediaBench } from "./media.bench.js";
import { mergeBench } from "./merge.bench.js";
import { sataBench } from "./sata.bench.js";

const only = process.env.BENCH;
if (!only || only === "io") console.log(await ioBench());
if (!only || only === "media") console.log(await mediaBench());
if (!only || only === "formats") console.log(await formatsBench());
if (!only || only === "merge") console.log(await mergeBench());
if (!only || only === "boot") console.log(await bootBench());
if (!only || only === "ide") console.log(await ideBench());
if (!only || only === "sata") console.log(await sataBench());
