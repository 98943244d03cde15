#!/usr/bin/env node
// Compiles contracts/ with the pinned solc-js (no download) and writes the artifacts shipped inside the Python
// package: provenance/contracts/ProvenanceRegistry.json and AttestationRegistry.json (ABI + creation and runtime
// bytecode). Each contract is compiled from its own sources only, so adding a contract never changes another's
// artifact.
//
//   node scripts/compile.js [NAME...]           write the artifacts (all, or only the contracts named)
//   node scripts/compile.js --check [NAME...]   fail (exit 1) if a shipped artifact differs from a fresh compile
//
// provenance/contracts/ProvenanceRegistryV1.json is frozen: the version 1 registry (written by this script at
// commit 66cae8d, before v2 replaced its sources), kept so the Python client can still read runs anchored on a v1
// deployment. Likewise ProvenanceRegistryV2.json (version 2, as shipped at commit 065f239, before version 3 added
// per-run block pointers and owner-only finalisation), so runs on version 2 deployments stay readable. (The
// AttestationRegistry's runtime code did not change when its constructor learnt to accept version 3: deployed ones
// are still recognised.) `--check` verifies each frozen artifact still has its pinned SHA-256.
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
const FROZEN = {
  ProvenanceRegistryV1: "0a260d202e449f09830a72a81015ff7c79bad082b70cd34c8246b33e3e073839",
  ProvenanceRegistryV2: "430cdb57b610f5681349ec58bc650da04058190c0a7193cb48b95f87f212fa32",
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

function checkFrozen(contract, sha256) {
  const ARTIFACT = artifactPath(contract);
  let found = "";
  try {
    found = require("crypto").createHash("sha256").update(fs.readFileSync(ARTIFACT)).digest("hex");
  } catch (err) {
    console.error(`check-artifact: cannot read ${path.relative(ROOT, ARTIFACT)}: ${err.message}`);
    return 1;
  }
  if (found !== sha256) {
    console.error(
      `check-artifact: ${path.relative(ROOT, ARTIFACT)} is frozen but changed (sha256 ${found}, pinned ${sha256}); ` +
        "restore it from git",
    );
    return 1;
  }
  console.log(`check-artifact: ${path.relative(ROOT, ARTIFACT)} is the frozen artifact it should be`);
  return 0;
}

function main(argv) {
  const names = argv.filter((a) => !a.startsWith("--"));
  for (const name of names) {
    if (!(name in CONTRACTS)) throw new Error(`unknown contract ${name}: one of ${Object.keys(CONTRACTS).join(", ")}`);
  }
  const checking = argv.includes("--check");
  let status = 0;
  if (checking && !names.length) {
    for (const [contract, sha256] of Object.entries(FROZEN)) status = checkFrozen(contract, sha256) || status;
  }
  for (const contract of names.length ? names : Object.keys(CONTRACTS)) {
    const fresh = render(compile(contract));
    if (checking) {
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

module.exports = { SOLC_SETTINGS, CONTRACTS, FROZEN, compile };

if (require.main === module) {
  process.exitCode = main(process.argv.slice(2));
}
