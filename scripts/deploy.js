// Deploys ProvenanceRegistry with Hardhat to any JSON-RPC endpoint and prints its address and chain id.
//
//   PROV_RPC_URL=http://127.0.0.1:8545 npx hardhat run scripts/deploy.js --network rpc
//
// Signs with PROV_PRIVATE_KEY when set, else with the node's first unlocked account (local dev nodes only).
// PROV_DEPLOY_OUT=FILE also writes {"address", "chainId", "txHash", "blockNumber"} as JSON there.
// `prov chain deploy` does the same from Python and records the address in the project config.
"use strict";

const fs = require("fs");
const hre = require("hardhat");

async function main() {
  const [deployer] = await hre.ethers.getSigners();
  if (!deployer) throw new Error("no signer: set PROV_PRIVATE_KEY or use a node with unlocked accounts");
  const registry = await hre.ethers.deployContract("ProvenanceRegistry", [], deployer);
  const tx = registry.deploymentTransaction();
  const receipt = await tx.wait();
  if (!receipt || receipt.status !== 1) throw new Error(`deployment transaction ${tx.hash} failed`);
  const { chainId } = await hre.ethers.provider.getNetwork();
  const result = {
    address: await registry.getAddress(),
    chainId: Number(chainId),
    txHash: tx.hash,
    blockNumber: receipt.blockNumber,
  };
  console.log(`ProvenanceRegistry deployed at ${result.address} on chain ${result.chainId} (tx ${result.txHash})`);
  if (process.env.PROV_DEPLOY_OUT) fs.writeFileSync(process.env.PROV_DEPLOY_OUT, `${JSON.stringify(result)}\n`);
}

main().catch((err) => {
  console.error(`deploy: ${err.shortMessage || err.message}`);
  process.exitCode = 1;
});
