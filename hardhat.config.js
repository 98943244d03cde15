// Hardhat 2 configuration (CommonJS). Compiles offline with the pinned solc-js from node_modules, using the same
// settings as scripts/compile.js (which writes the artifact shipped inside the Python package).
//
//   npx hardhat test                                   mocha tests in tests/contracts/
//   PROV_RPC_URL=http://127.0.0.1:8545 [PROV_PRIVATE_KEY=0x...] npx hardhat run scripts/deploy.js --network rpc
"use strict";

require("@nomicfoundation/hardhat-chai-matchers");
require("@nomicfoundation/hardhat-ethers");

const path = require("path");
const { subtask } = require("hardhat/config");
const { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } = require("hardhat/builtin-tasks/task-names");
const { SOLC_SETTINGS } = require("./scripts/compile.js");

const SOLC_VERSION = require("solc/package.json").version;

// Never download a compiler: hand Hardhat the solc-js build installed from the lockfile.
subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args, hre, runSuper) => {
  if (args.solcVersion !== SOLC_VERSION) return runSuper();
  const solc = require("solc");
  return {
    compilerPath: path.join(path.dirname(require.resolve("solc")), "soljson.js"),
    isSolcJs: true,
    version: args.solcVersion,
    longVersion: solc.version(),
  };
});

const rpcAccounts = process.env.PROV_PRIVATE_KEY ? [process.env.PROV_PRIVATE_KEY] : "remote";

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  solidity: { version: SOLC_VERSION, settings: SOLC_SETTINGS },
  paths: {
    sources: "./contracts",
    tests: "./tests/contracts",
    cache: "./cache",
    artifacts: "./artifacts",
  },
  networks: {
    hardhat: { hardfork: "cancun" },
    rpc: { url: process.env.PROV_RPC_URL || "http://127.0.0.1:8545", accounts: rpcAccounts },
  },
  mocha: { timeout: 60000 },
};
