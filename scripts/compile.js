#!/usr/bin/env node
// Compiles contracts/ with the pinned solc-js (no download) and writes the artifacts shipped inside the Python
// package: provenance/contracts/ProvenanceRegistry.json and AttestationRegistry.json (ABI + creation and runtime
// bytecode). Each contract is compiled from its own sources only, so adding a contract never changes another's
// artifact.
//
//   node scripts/compile.js           write the artifacts
//   node scripts/compile.js --check   fail (exit 1) if a shipped artifact differs from a fresh compile
//
// hardhat.config.js imports SOLC_SETTINGS from here, so Hardhat and this script compile identically. Metadata is
// left out of the bytecode (no CBOR trailer), so the bytecode depends only on the sources and these settings.
"use strict";

const fs = require("fs");
const path = require("path");

const ROOT = path.resolve(__dirname, "..");
const CONTRACTS = {
  ProvenanceRegistry: ["contracts/IProvenanceRegistry.sol", "contracts/ProvenanceRegistry.sol"],
  AttestationRegistry: [
    "contracts/IProvenanceRegistry.sol",
    "contracts/IAttestationRegistry.sol",
    "contracts/AttestationRegistry.sol",
  ],
};
const artifactPath = (contract) => path.join(ROOT, "provenance", "contracts", `${contract}.json`);

const SOLC_SETTINGS = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 200 },
  metadata: { bytecodeHash: "none", appendCBOR: false },
};

function compile(CONTRACT = "ProvenanceRegistry") {
  const solc = require("solc");
  const sources = {};
  for (const name of CONTRACTS[CONTRACT]) {
    sources[name] = { content: fs.readFileSync(path.join(ROOT, name), "utf8") };
  }
  const input = {
    language: "Solidity",
    sources,
    settings: {
      ...SOLC_SETTINGS,
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const problems = (output.errors || []).filter((e) => e.severity !== "info");
  if (problems.length) {
    for (const p of problems) console.error(p.formattedMessage || p.message);
    throw new Error(`solc reported ${problems.length} error(s) or warning(s); fix them (warnings count too)`);
  }
  const sourceName = `contracts/${CONTRACT}.sol`;
  const contract = output.contracts[sourceName][CONTRACT];
  return {
    contractName: CONTRACT,
    sourceName,
    compiler: { name: "solc-js", version: solc.version(), settings: SOLC_SETTINGS },
    abi: contract.abi,
    bytecode: `0x${contract.evm.bytecode.object}`,
    deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
  };
}

function render(artifact) {
  return `${JSON.stringify(artifact, null, 2)}\n`;
}

function check(contract, fresh) {
  const ARTIFACT = artifactPath(contract);
  let shipped = "";
  try {
    shipped = fs.readFileSync(ARTIFACT, "utf8");
  } catch (err) {
    console.error(`check-artifact: cannot read ${path.relative(ROOT, ARTIFACT)}: ${err.message}`);
    return 1;
  }
  if (shipped !== fresh) {
    const a = JSON.parse(shipped);
    const b = JSON.parse(fresh);
    const differing = Object.keys(b).filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
    console.error(
      `check-artifact: ${path.relative(ROOT, ARTIFACT)} differs from a fresh compile ` +
        `(fields: ${differing.join(", ") || "formatting"}); run \`node scripts/compile.js\` and commit it`,
    );
    return 1;
  }
  console.log(`check-artifact: ${path.relative(ROOT, ARTIFACT)} matches a fresh compile`);
  return 0;
}

function main(argv) {
  let status = 0;
  for (const contract of Object.keys(CONTRACTS)) {
    const fresh = render(compile(contract));
    if (argv.includes("--check")) {
      status = check(contract, fresh) || status;
      continue;
    }
    const ARTIFACT = artifactPath(contract);
    fs.mkdirSync(path.dirname(ARTIFACT), { recursive: true });
    fs.writeFileSync(ARTIFACT, fresh);
    console.log(`wrote ${path.relative(ROOT, ARTIFACT)}`);
  }
  return status;
}

module.exports = { SOLC_SETTINGS, CONTRACTS, compile };

if (require.main === module) {
  process.exitCode = main(process.argv.slice(2));
}
