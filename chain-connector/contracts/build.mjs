// Compiles StayputLedger.sol with the pinned solc (npm `solc`, see
// tools/package.json) for evmVersion paris (no PUSH0: FISCO BCOS and older chains lack it), through
// solc's standard-JSON interface (solcjs has no --evm-version flag), and
// writes the ABI and deployment bytecode beside the source. Deterministic:
// the same source and solc give the same files, which a test checks.
//
//   node chain-connector/contracts/build.mjs [--check]
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "tools", "package.json"));
const solc = require("solc");

const source = readFileSync(join(here, "StayputLedger.sol"), "utf8");
const input = {
  language: "Solidity",
  sources: { "StayputLedger.sol": { content: source } },
  settings: {
    evmVersion: "paris",
    optimizer: { enabled: true, runs: 200 },
    viaIR: true,
    metadata: { bytecodeHash: "none", appendCBOR: false },
    outputSelection: { "StayputLedger.sol": { StayputLedger: ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(1);
}
const contract = output.contracts["StayputLedger.sol"].StayputLedger;
const abi = JSON.stringify(contract.abi, null, 2) + "\n";
const bin = contract.evm.bytecode.object + "\n";
const abiPath = join(here, "StayputLedger.abi.json");
const binPath = join(here, "StayputLedger.bin");
if (process.argv.includes("--check")) {
  const same = readFileSync(abiPath, "utf8") === abi && readFileSync(binPath, "utf8") === bin;
  if (!same) {
    console.error("StayputLedger.abi.json / .bin are stale: run node chain-connector/contracts/build.mjs");
    process.exit(1);
  }
  console.log(`up to date (solc ${solc.version()}, evmVersion paris)`);
} else {
  writeFileSync(abiPath, abi);
  writeFileSync(binPath, bin);
  console.log(`wrote ${abiPath} and ${binPath} (solc ${solc.version()}, evmVersion paris, ${bin.length / 2} bytes)`);
}
