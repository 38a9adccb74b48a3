/**
 * `make bench`: every benchmark prints its figure beside a peer measured in the same run.
 */
import { bootBench } from "./boot.js";

console.log(await bootBench());
