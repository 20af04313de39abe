// The one ES module the broker's web demo loads (src/demo/assets/octet-client.js): the client
// and its IndexedDB store. Rebuild with `npm run demo`; a Rust test checks the checked-in copy.
export * from "../src/index.js";
export { IdbStore } from "../src/idb.js";
