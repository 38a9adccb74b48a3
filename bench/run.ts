/**
 * `make bench`: every benchmark prints its figure beside a peer measured in the same run.
 * BENCH=io, BENCH=media, BENCH=boot or BENCH=ide runs one of them.
 */
import { bootBench } from "./boot.js";
import { ideBench } from "./ide.bench.js";
import { ioBench } from "./io.bench.js";
import { mediaBench } from "./media.bench.js";

const only = process.env.BENCH;
if (!only || only === "io") console.log(await ioBench());
if (!only || only === "media") console.log(await mediaBench());
if (!only || only === "boot") console.log(await bootBench());
if (!only || only === "ide") console.log(await ideBench());
